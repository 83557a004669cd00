// The chat UI both React examples use; the demo page at / has the same look (../chat.css) in plain JS.
// Copy this folder into your app, or take the pieces you want: each file stands on its own.
export { ChatLayout, type ChatLayoutProps } from "./ChatLayout";
export { Composer } from "./Composer";
export { CopyButton } from "./CopyButton";
export { Markdown } from "./Markdown";
export { AnswerMessage, ReasoningMessage, ToolMessage, UserMessage, statusNote, type AnswerStatus } from "./Messages";
export { Sidebar, dateText, type ConversationSummary, type SidebarProps } from "./Sidebar";
export { useHashId } from "./useHashId";
