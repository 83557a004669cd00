"""Clients that arrive together and leave together, in a process of their own:
``python -m tests.leavers PORT PATH COUNT``.

Each opens a connection and sends one chat request whole (head and body in one write), then reads
nothing. Once all are sent the script says ``sent``; at a line on its standard input they all close
their sockets at once, and it says ``left`` and exits. A process of its own, so that its clients are not
held back by the test process, whose threaded stand-in model shares one GIL with whatever runs there
(a thousand clients on the test's own loop sometimes sent their bodies seconds late on a busy machine).
"""

from __future__ import annotations

import asyncio
import sys


async def main(port: int, path: str, count: int) -> None:
    body = b'{"content": "think"}'
    request = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    writers: list[asyncio.StreamWriter] = []

    async def arrive() -> None:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        await writer.drain()
        writers.append(writer)

    await asyncio.gather(*(arrive() for _ in range(count)))
    print("sent", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    for writer in writers:
        writer.close()
    await asyncio.gather(*(writer.wait_closed() for writer in writers), return_exceptions=True)
    print("left", flush=True)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], int(sys.argv[3])))
