"""Run a page's shell lines as a reader types them: one terminal for the commands, others for the servers.

``Terminal`` is a real bash that keeps its directory and environment between lines (``cd``, ``. activate``,
``export``), so a page's lines run as they stand. A server the page starts in a terminal of its own (or
with ``&``) is started beside it, with the terminal's directory and environment, and waited for until
it listens. ``expect`` compares what a command printed with the page's ``console`` block, where ``…``
or ``...`` stands for any text.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

from .servers import wait_for_port


def console_blocks(text: str) -> list[list[tuple[str, list[str]]]]:
    """Each ```console block of a page as (command, the lines it printed) pairs."""
    blocks = []
    for block in re.findall(r"^```console\n(.*?)^```$", text, re.M | re.S):
        pairs: list[tuple[str, list[str]]] = []
        for line in block.splitlines():
            if line.startswith("$ "):
                pairs.append((line[2:], []))
            else:
                pairs[-1][1].append(line)
        blocks.append(pairs)
    return blocks


def sh_lines(text: str) -> list[str]:
    """Every command line of a page section's ```sh blocks, comments stripped."""
    blocks = re.findall(r"^```sh\n(.*?)^```$", text, re.M | re.S)
    return [line.split("  #", 1)[0].strip() for block in blocks for line in block.splitlines() if line.strip()]


def follow(terminal: Terminal, text: str, servers: Mapping[str, int], own: Callable[[str], str] = str) -> list[Path]:
    """Run a page's ```sh lines and ```console sessions in the order the page has them, checking what each
    console command prints. A line that starts a server (one that starts with a key of ``servers``) is
    started beside the terminal and waited for on its port. ``own`` makes a line this test's own (its
    ports). The servers' logs."""
    logs = []
    for kind, block in re.findall(r"^```(sh|console)\n(.*?)^```$", text, re.M | re.S):
        steps = sh_lines(f"```sh\n{block}```\n") if kind == "sh" else console_blocks(f"```console\n{block}```\n")[0]
        for step in steps:
            command, shown = (step, None) if isinstance(step, str) else step
            command = own(command)
            server = next((port for start, port in servers.items() if command.startswith(start)), None)
            if server is not None:
                logs.append(terminal.serve(command, server))
                continue
            printed = terminal.run(command)
            if shown is not None:
                shown = [own(line) for line in shown]
                assert matches(shown, printed), f"{command}\nprinted:\n{printed}\nthe page shows:\n" + "\n".join(shown)
    return logs


def matches(expected: list[str], printed: str) -> bool:
    """The printed text is the page's, with ``…`` (within a line) and a line ``...`` (any lines) as wildcards."""
    pattern = ""
    for line in expected:
        if line == "...":
            pattern += r"(?:.*\n)*?"
        else:
            pattern += ".*?".join(re.escape(part) for part in line.split("…")) + r"\n"
    return re.fullmatch(pattern, printed if printed.endswith("\n") or not printed else printed + "\n") is not None


class Terminal:
    """One bash, fed a line at a time, as a reader types; servers beside it in terminals of their own."""

    def __init__(self, cwd: Path, env: dict[str, str], logs: Path) -> None:
        self.logs = logs
        self.servers: list[subprocess.Popen[bytes]] = []
        # What a line prints on stderr goes to a log: curl's progress meter, which a terminal would not show.
        self.stderr = logs / "terminal.stderr"
        with self.stderr.open("wb") as stderr:
            self.bash = subprocess.Popen(["bash", "--noprofile", "--norc"], cwd=cwd, env=env, stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=stderr, start_new_session=True)

    def run(self, line: str, timeout: float = 600) -> str:
        """Run one line; what it printed. A line that fails fails the test."""
        assert self.bash.stdin is not None and self.bash.stdout is not None
        marker = uuid.uuid4().hex
        self.bash.stdin.write(f"{line}\nprintf '\\n{marker} %s\\n' $?\n".encode())
        self.bash.stdin.flush()
        printed = b""
        while not (found := re.search(rb"\n?" + marker.encode() + rb" (\d+)\n$", printed)):
            chunk = self.bash.stdout.readline()
            assert chunk, f"bash ended during {line!r}: {printed.decode(errors='replace')[-3000:]}"
            printed += chunk
        output = printed[:found.start()].decode(errors="replace")
        assert found.group(1) == b"0", \
            f"{line!r} exited with {found.group(1).decode()}:\n{output[-3000:]}\n{self.stderr.read_text()[-3000:]}"
        return output

    def state(self) -> tuple[str, dict[str, str]]:
        """The terminal's directory and environment, for another terminal opened from it."""
        directory = self.run("pwd").strip()
        env = dict(item.split("=", 1) for item in self.run("env -0 | tr '\\0' '\\036'").strip("\n").split("\036")
                   if "=" in item)
        return directory, env

    def serve(self, line: str, port: int) -> Path:
        """Run a server's line in a terminal of its own, and wait until it listens; its log."""
        directory, env = self.state()
        log = self.logs / f"server-{len(self.servers)}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(["bash", "-c", f"exec {line.removesuffix('&').strip()}"], cwd=directory,
                                       env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.servers.append(process)
        wait_for_port(port, process, timeout=60)
        return log

    def close(self) -> None:
        for process in [*self.servers, self.bash]:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()

    def __enter__(self) -> Terminal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
