// Where conversations live: on the server (/v1/conversations, when it has
// that API) or in this browser (localStorage). The chat page speaks to both
// through one interface; only how an answer is generated differs.
import { ApiError, getJSON, request, routeExists, sendJSON, streamEvents } from './api'
import { load, save } from './persist'

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
  usage?: Usage | null
  params?: Record<string, unknown> | null
  /** Decode speed measured in this browser (tokens after the first / seconds). */
  tokens_per_second?: number | null
  /** An error shown in place of (or after) the answer. */
  error?: string | null
  /** Earlier turns the server left out so that this one fit the context window. */
  dropped_turns?: number
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

/** What one generation reports back while it streams. */
export interface StreamHandlers {
  onDelta(text: string): void
  onUsage(usage: Usage): void
  onIds?(ids: { message_id?: string; dropped_turns?: number }): void
}

export interface GenerateRequest {
  conversation: Conversation
  /** The new user message; null regenerates the answer to the last one. */
  content: string | null
  model: string | null
  sampling: Record<string, number>
  signal: AbortSignal
}

export interface ConversationStore {
  readonly kind: 'server' | 'browser'
  list(): Promise<Summary[]>
  get(id: string): Promise<Conversation>
  create(init: { title?: string; system_prompt?: string; model?: string | null }): Promise<Conversation>
  update(id: string, patch: { title?: string; system_prompt?: string }): Promise<void>
  remove(id: string): Promise<void>
  exportMarkdown(id: string): Promise<string>
  /** Stream an answer; the caller shows it, the store keeps it (server) or is told to (browser). */
  generate(req: GenerateRequest, on: StreamHandlers): Promise<void>
  /** Persist the page's copy after a generation (browser store only; the server stored it). */
  saved(conversation: Conversation): void
  readonly canRegenerate: boolean
}

function nowSeconds(): number {
  return Math.floor(Date.now() / 1000)
}

function newId(prefix: string): string {
  return `${prefix}-${crypto.getRandomValues(new Uint32Array(2)).join('')}`
}

/** Feed OpenAI ``chat.completion.chunk`` frames to the handlers. */
async function pump(frames: AsyncGenerator<Record<string, unknown>>, on: StreamHandlers) {
  for await (const frame of frames) {
    const extra = frame.starchart as { message_id?: string; dropped_turns?: number } | undefined
    if (extra) on.onIds?.(extra)
    const choices = frame.choices as { delta?: { content?: string } }[] | undefined
    const text = choices?.[0]?.delta?.content
    if (text) on.onDelta(text)
    if (frame.usage) on.onUsage(frame.usage as Usage)
  }
}

export function toMarkdown(c: Conversation): string {
  const parts = [`# ${c.title || 'Conversation'}`]
  if (c.system_prompt) parts.push(`**System:** ${c.system_prompt}`)
  for (const m of c.messages) {
    parts.push(`## ${m.role === 'user' ? 'User' : 'Assistant'}\n\n${m.content}`)
  }
  return parts.join('\n\n') + '\n'
}

/**
 * The history the model sees: a turn whose answer failed (say, the message was
 * too long) is left out, or every later message would fail the same way.
 */
export function turnsToSend(messages: Message[]): { role: string; content: string }[] {
  const out: { role: string; content: string }[] = []
  messages.forEach((m, i) => {
    const next = messages[i + 1]
    const failed = m.role === 'assistant' ? !!m.error : next?.role === 'assistant' && !!next.error
    if (m.content && !failed) out.push({ role: m.role, content: m.content })
  })
  return out
}

/** Conversations in localStorage; answers from POST /v1/chat/completions. */
export class BrowserStore implements ConversationStore {
  readonly kind = 'browser'
  readonly canRegenerate = true
  private key = 'starchart.conversations'

  private all(): Conversation[] {
    return load<Conversation[]>(this.key, [])
  }

  private write(all: Conversation[]): void {
    save(this.key, all)
  }

  async list(): Promise<Summary[]> {
    return this.all()
      .sort((a, b) => Number(b.updated_at) - Number(a.updated_at))
      .map(({ messages: _, ...summary }) => summary)
  }

  async get(id: string): Promise<Conversation> {
    const found = this.all().find((c) => c.id === id)
    if (!found) throw new ApiError(`conversation ${id} not found in this browser`, 404)
    return found
  }

  async create(init: { title?: string; system_prompt?: string; model?: string | null }) {
    const conversation: Conversation = {
      id: newId('conv'), title: init.title ?? '', system_prompt: init.system_prompt ?? '',
      model: init.model ?? null, created_at: nowSeconds(), updated_at: nowSeconds(), messages: [],
    }
    this.write([conversation, ...this.all()])
    return conversation
  }

  async update(id: string, patch: { title?: string; system_prompt?: string }) {
    this.write(this.all().map((c) => (c.id === id ? { ...c, ...patch, updated_at: nowSeconds() } : c)))
  }

  async remove(id: string) {
    this.write(this.all().filter((c) => c.id !== id))
  }

  async exportMarkdown(id: string) {
    return toMarkdown(await this.get(id))
  }

  saved(conversation: Conversation): void {
    const copy: Conversation = JSON.parse(JSON.stringify(conversation))
    copy.updated_at = nowSeconds()
    const rest = this.all().filter((c) => c.id !== copy.id)
    this.write([copy, ...rest])
  }

  async generate(req: GenerateRequest, on: StreamHandlers): Promise<void> {
    const { conversation } = req
    // The page already holds the new user message (and no answer to it yet).
    const history = turnsToSend(conversation.messages)
    const body = {
      ...(req.model ? { model: req.model } : {}),
      // Always sent, even empty, so the answer does not depend on a server-side default.
      messages: [{ role: 'system', content: conversation.system_prompt }, ...history],
      ...req.sampling,
      stream: true,
      stream_options: { include_usage: true },
    }
    await pump(streamEvents('/v1/chat/completions', body, req.signal), on)
  }
}

/** Conversations stored by the server: survive a server restart and other browsers. */
export class ServerStore implements ConversationStore {
  readonly kind = 'server'
  // The server answers the last user turn again when asked to regenerate.
  readonly canRegenerate = true

  async list(): Promise<Summary[]> {
    return (await getJSON<{ data: Summary[] }>('/v1/conversations')).data
  }

  async get(id: string): Promise<Conversation> {
    return getJSON<Conversation>(`/v1/conversations/${encodeURIComponent(id)}`)
  }

  async create(init: { title?: string; system_prompt?: string; model?: string | null }) {
    const body = { ...init, model: init.model ?? undefined }
    const conversation = await sendJSON<Conversation>('POST', '/v1/conversations', body)
    return { ...conversation, messages: conversation.messages ?? [] }
  }

  async update(id: string, patch: { title?: string; system_prompt?: string }) {
    await sendJSON('PATCH', `/v1/conversations/${encodeURIComponent(id)}`, patch)
  }

  async remove(id: string) {
    await request('DELETE', `/v1/conversations/${encodeURIComponent(id)}`)
  }

  async exportMarkdown(id: string) {
    const path = `/v1/conversations/${encodeURIComponent(id)}/export?format=markdown`
    return (await request('GET', path)).text()
  }

  saved(): void {}

  async generate(req: GenerateRequest, on: StreamHandlers): Promise<void> {
    const body = {
      ...(req.content === null ? { regenerate: true } : { content: req.content }),
      stream: true, ...req.sampling,
      ...(req.model ? { model: req.model } : {}),
    }
    const path = `/v1/conversations/${encodeURIComponent(req.conversation.id)}/messages`
    await pump(streamEvents(path, body, req.signal), on)
  }
}

/** The server's store when it has the conversations API (GET answers), else this browser's. */
export async function openStore(): Promise<ConversationStore> {
  try {
    if (await routeExists('/v1/conversations')) return new ServerStore()
  } catch {
    // Unreachable or unauthorised: keep chatting in the browser; the error shows on first use.
  }
  return new BrowserStore()
}
