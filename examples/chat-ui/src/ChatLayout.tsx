// The frame: the conversation list (a drawer on phones, collapsible on wide screens), a top bar, the
// thread, which follows a growing answer until the reader scrolls up, and the composer.
import { useEffect, useLayoutEffect, useRef, useState, type ReactNode } from "react";
import { Composer } from "./Composer";
import { Sidebar, type SidebarProps } from "./Sidebar";

export interface ChatLayoutProps extends SidebarProps {
  /** The open conversation's title, and which example this is. */
  title: string;
  kind: string;
  /** Changes when the reader asks something: the thread follows the answer down again. */
  followKey: unknown;
  busy: boolean;
  error: string;
  /** Resolves to false when the server refused the message before answering (the box gets it back). */
  onSend(text: string): void | Promise<boolean | void>;
  onStop(): void;
  /** The thread's items (UserMessage, AnswerMessage, ...). */
  children: ReactNode;
}

const PHONE = "(max-width: 720px)";

export function ChatLayout(props: ChatLayoutProps) {
  const [collapsed, setCollapsed] = useState(false);
  const [drawer, setDrawer] = useState(false);
  const thread = useRef<HTMLDivElement>(null);
  const stick = useRef(true);

  useLayoutEffect(() => {
    stick.current = true;
  }, [props.followKey]);
  useLayoutEffect(() => { // after every render: keep up with the answer, unless the reader went up
    if (stick.current && thread.current) thread.current.scrollTop = thread.current.scrollHeight;
  });
  useEffect(() => {
    document.documentElement.dataset.ready = "true"; // wired up (tests wait for it)
  }, []);

  const phone = matchMedia(PHONE).matches;
  const closing = <A extends unknown[]>(f: (...args: A) => void) => (...args: A) => {
    setDrawer(false);
    f(...args);
  };

  return (
    <div className={`app${collapsed ? " collapsed" : ""}${drawer ? " drawer-open" : ""}`} id="app">
      <Sidebar {...props} onOpen={closing(props.onOpen)} onNew={closing(props.onNew)} />
      <main className="chat">
        <div className="topbar">
          <button className="icon" id="toggle-sidebar" type="button" aria-controls="sidebar" title="Conversations"
            aria-expanded={phone ? drawer : !collapsed}
            onClick={() => (matchMedia(PHONE).matches ? setDrawer(!drawer) : setCollapsed(!collapsed))}>☰</button>
          <h1 id="title">{props.title}</h1>
          <span className="kind">{props.kind}</span>
        </div>
        <div className="thread" id="thread" ref={thread}
          onScroll={(e) => {
            const t = e.currentTarget;
            stick.current = t.scrollHeight - t.scrollTop - t.clientHeight < 40;
          }}>
          <ol className="messages" id="messages" aria-label="Messages">{props.children}</ol>
        </div>
        <Composer busy={props.busy} error={props.error} onSend={props.onSend} onStop={props.onStop} />
      </main>
    </div>
  );
}
