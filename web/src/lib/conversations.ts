// Conversations live on the server (/v1/conversations): one store, seen from any
// browser and kept across restarts. Nothing here is written to this browser.
import { getJSON, request, sendJSON, streamEvents } from './api'

export interface Usage {
  prompt_tokens: number
  completion_tokens: number
  total_tokens?: number
}

export interface Message {
  id: string
  role: 'user' | 'assistant'
  content: string
  incomplete?: boolean
  finish_reason?: string | null
  usage?: Usage | null
  params?: Record<string, unknown> | null
  /** Decode speed measured in this browser (tokens after the first / seconds). */
  tokens_per_second?: number | null
  /** An error shown in place of (or after) the answer. */
  error?: string | null
  /** Earlier turns the server left out so that this one fit the context window. */
  dropped_turns?: number | null
  /** While it streams: what this browser has seen so far. */
  live?: LiveFigures | null
  /** The reply's speed as the server measured and stored it. */
  timings?: ReplyTimings | null
  /** Functions the model called instead of (or beside) answering in text. */
  tool_calls?: ToolCall[] | null
}

export interface ToolCall {
  id: string
  type?: 'function'
  function: { name: string; arguments: string }
}

export interface ReplyTimings {
  ttft_ms: number | null
  /** Of the time to first token, the wait in the model's queue. */
  queue_ms?: number | null
  prompt_tokens_per_second: number | null
  tokens_per_second: number | null
}

export interface LiveFigures {
  /** Text pieces received (one per token from the engines starchart runs). */
  tokens: number
  /** From sending the request to the first piece of text. */
  ttft_ms?: number
  tokens_per_second?: number | null
  /** The prompt's length, as the server counted it (its first frame says). */
  prompt_tokens?: number
  /** Prompt tokens over the time to the first token (queue included, as the server counts). */
  prompt_tokens_per_second?: number | null
  /** 1 = the next to run; null: not (or no longer) waiting in the model's queue. */
  queue_position?: number | null
  /** Seen in the queue at least once: leaving it means the model reads the prompt. */
  was_queued?: boolean
  started_at?: number
}

export interface Conversation {
  id: string
  title: string
  system_prompt: string
  model: string | null
  created_at: number | string
  updated_at: number | string
  messages: Message[]
}

export type Summary = Omit<Conversation, 'messages'>

/** The ids the server sends in a stream's first frame: both messages are stored by then. */
export interface TurnIds {
  message_id?: string
  user_message_id?: string
  dropped_turns?: number
  prompt_tokens?: number
  /** The turn goes on with the answer ``message_id`` (continue). */
  continued?: boolean
}

/** A piece of a tool call as OpenAI streams it: the name first, the arguments in pieces. */
export interface ToolCallPiece {
  index: number
  id?: string
  function?: { name?: string; arguments?: string }
}

/** What one generation reports back while it streams. */
export interface StreamHandlers {
  onDelta(text: string): void
  onUsage(usage: Usage): void
  onFinish?(reason: string): void
  onIds?(ids: TurnIds): void
  /** The turn's place in the model's queue changed (before its first token). */
  onQueue?(position: number | null): void
  onToolCall?(piece: ToolCallPiece): void
}

export interface GenerateRequest {
  conversationId: string
  /** The new user message; null regenerates the answer to the last one (or continues it). */
  content: string | null
  /** Go on with the last answer (one cut at the token limit) instead of answering again. */
  continue?: boolean
  /** Edit: the id of the user message that this one (and its answer) replaces. */
  replace?: string
  model: string | null
  sampling: Record<string, unknown>
  signal: AbortSignal
}

function path(id: string, rest = ''): string {
  return `/v1/conversations/${encodeURIComponent(id)}${rest}`
}

/** Newest first; ``search`` keeps those whose title or any message contains it. */
export async function listConversations(search = ''): Promise<Summary[]> {
  const query = search ? `?search=${encodeURIComponent(search)}` : ''
  return (await getJSON<{ data: Summary[] }>(`/v1/conversations${query}`)).data
}

export async function deleteMessage(conversationId: string, messageId: string): Promise<void> {
  await request('DELETE', path(conversationId, `/messages/${encodeURIComponent(messageId)}`))
}

/** Bring in a conversation exported as JSON (GET .../export): a new one on this server. */
export async function importConversation(exported: unknown): Promise<Conversation> {
  const e = exported as Partial<Conversation> | null
  if (!e || !Array.isArray(e.messages)) {
    throw new Error('This file is not an exported conversation (no "messages" list).')
  }
  const messages = e.messages
    .filter((m) => (m.role === 'user' || m.role === 'assistant') && typeof m.content === 'string')
    .map((m) => ({ role: m.role, content: m.content }))
  const body = { title: e.title ?? undefined, system_prompt: e.system_prompt ?? undefined, messages }
  return sendJSON<Conversation>('POST', '/v1/conversations', body)
}

export async function getConversation(id: string): Promise<Conversation> {
  const c = await getJSON<Conversation>(path(id))
  return { ...c, title: c.title ?? '', system_prompt: c.system_prompt ?? '' }
}

export async function createConversation(init: {
  title?: string
  system_prompt?: string
  model?: string | null
}): Promise<Conversation> {
  const body = { ...init, model: init.model ?? undefined }
  const c = await sendJSON<Conversation>('POST', '/v1/conversations', body)
  return { ...c, title: c.title ?? '', system_prompt: c.system_prompt ?? '',
    messages: c.messages ?? [] }
}

export async function updateConversation(
  id: string,
  patch: { title?: string; system_prompt?: string },
): Promise<void> {
  await sendJSON('PATCH', path(id), patch)
}

export async function deleteConversation(id: string): Promise<void> {
  await request('DELETE', path(id))
}

export async function exportFile(id: string, format: 'markdown' | 'json'): Promise<string> {
  return (await request('GET', path(id, `/export?format=${format}`))).text()
}

/** Stream an answer; the server stores both turns, the caller shows them. */
export async function generate(req: GenerateRequest, on: StreamHandlers): Promise<void> {
  const body = {
    ...(req.content !== null ? { content: req.content }
      : req.continue ? { continue: true } : { regenerate: true }),
    ...(req.replace ? { replace: req.replace } : {}),
    stream: true, ...req.sampling,
    ...(req.model ? { model: req.model } : {}),
  }
  for await (const frame of streamEvents(path(req.conversationId, '/messages'), body,
    req.signal)) {
    const extra = frame.starchart as TurnIds | undefined
    if (extra) on.onIds?.(extra)
    const queue = frame.queue as { position: number | null } | undefined
    if (queue) on.onQueue?.(queue.position)
    const choices = frame.choices as {
      delta?: { content?: string; tool_calls?: ToolCallPiece[] }
      finish_reason?: string | null
    }[] | undefined
    const text = choices?.[0]?.delta?.content
    if (text) on.onDelta(text)
    for (const piece of choices?.[0]?.delta?.tool_calls ?? []) on.onToolCall?.(piece)
    const reason = choices?.[0]?.finish_reason
    if (reason) on.onFinish?.(reason)
    if (frame.usage) on.onUsage(frame.usage as Usage)
  }
}
