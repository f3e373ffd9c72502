// Talking to the starchart server: JSON calls, SSE streams, readable errors, and
// whether the server can be reached at all (the page retries until it can).
import { EventSourceParserStream, type EventSourceMessage } from 'eventsource-parser/stream'
import { reactive } from 'vue'
import { load, save } from './persist'

const KEY_STORAGE = 'starchart.apiKey'

export function apiKey(): string {
  return load<string>(KEY_STORAGE, '')
}

export function setApiKey(key: string): void {
  save(KEY_STORAGE, key.trim())
}

/** An API failure, with the server's OpenAI-style error fields when it sent them. */
export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly code: string | null = null,
    readonly param: string | null = null,
  ) {
    super(message)
    this.name = 'ApiError'
  }
}

const HINTS: Record<string, string> = {
  invalid_api_key: 'Paste an API key with the key button at the top right.',
  model_not_ready: 'The model is still loading; try again in a moment.',
}

/** One sentence for a message over the context window (the server's text says more). */
function overflow(error: ApiError): string {
  const numbers = /context window is (\d+) tokens, but the prompt is (\d+) tokens/.exec(error.message)
  if (!numbers) return error.message.split(/(?<=\.)\s/)[0]
  const [, window, prompt] = numbers
  return `This message is too long for the model: the conversation would take ${prompt}` +
    ` tokens and its context window holds ${window}, so shorten the message or start a new chat.`
}

/** What the page shows for an error: the server's message plus what to do about it. */
export function describe(error: unknown): string {
  if (error instanceof ApiError) {
    if (error.code === 'context_length_exceeded') return overflow(error)
    const hint = error.code ? HINTS[error.code] : undefined
    return hint ? `${error.message} ${hint}` : error.message
  }
  return error instanceof Error ? error.message : String(error)
}

/** Whether sending the same thing again may work (the server was away or busy). */
export function retryable(error: unknown): boolean {
  return error instanceof ApiError && (error.status === 0 || error.status === 429 ||
    error.status >= 500)
}

/**
 * Whether the server answers. Set false by any request that cannot reach it;
 * the page then checks ``/ready`` every few seconds and calls the reconnect
 * listeners once it answers again.
 */
export const connection = reactive({ online: true })
const reconnectListeners: (() => void)[] = []
let checking = 0

export function onReconnect(listener: () => void): () => void {
  reconnectListeners.push(listener)
  return () => reconnectListeners.splice(reconnectListeners.indexOf(listener), 1)
}

async function checkConnection(): Promise<void> {
  try {
    await fetch('/ready', { cache: 'no-store' })  // any HTTP answer means it is back
  } catch {
    checking = window.setTimeout(checkConnection, RETRY_MS)
    return
  }
  checking = 0
  connection.online = true
  for (const listener of [...reconnectListeners]) listener()
}

export const RETRY_MS = 2000

function markUnreachable(): void {
  connection.online = false
  if (!checking) checking = window.setTimeout(checkConnection, RETRY_MS)
}

function unreachable(): ApiError {
  markUnreachable()
  return new ApiError(
    'Cannot reach the starchart server: it may have stopped. Start it again with' +
      ' `starchart serve` (or `make run`); this page reconnects by itself.',
    0,
    'server_unreachable',
  )
}

/**
 * Marks a read the page repeats on a timer (the model picker's, the status page's): the
 * server logs it at DEBUG, so an open tab does not write an INFO line every few seconds.
 */
const POLL_HEADER = 'X-Starchart-Poll'

function headers(json: boolean, poll: boolean): Record<string, string> {
  const out: Record<string, string> = {}
  if (json) out['Content-Type'] = 'application/json'
  if (poll) out[POLL_HEADER] = '1'
  const key = apiKey()
  if (key) out.Authorization = `Bearer ${key}`
  return out
}

async function errorFrom(response: Response): Promise<ApiError> {
  let body: unknown = null
  try {
    body = await response.json()
  } catch {
    // Not JSON (a proxy's page, say): fall back to the status line.
  }
  const err = (body as { error?: { message?: string; code?: string; param?: string } } | null)
    ?.error
  if (err?.message) return new ApiError(err.message, response.status, err.code ?? null, err.param ?? null)
  return new ApiError(
    `The server answered ${response.status} ${response.statusText}.`.replace(' .', '.'),
    response.status,
  )
}

export async function request(
  method: string,
  path: string,
  body?: unknown,
  signal?: AbortSignal,
  poll = false,
): Promise<Response> {
  let response: Response
  try {
    response = await fetch(path, {
      method,
      headers: headers(body !== undefined, poll),
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
    })
  } catch (error) {
    if (signal?.aborted) throw error
    throw unreachable()
  }
  if (!response.ok) throw await errorFrom(response)
  return response
}

/** GET ``path`` as JSON; ``poll``: one of the page's timed re-reads (see POLL_HEADER). */
export async function getJSON<T>(path: string, poll = false): Promise<T> {
  return (await request('GET', path, undefined, undefined, poll)).json() as Promise<T>
}

export async function sendJSON<T>(method: string, path: string, body?: unknown): Promise<T> {
  return (await request(method, path, body ?? {})).json() as Promise<T>
}

/**
 * POST ``body`` and yield each JSON ``data:`` frame of the server-sent-event
 * answer until ``[DONE]``. An error frame (sent after the headers) throws.
 */
export async function* streamEvents(
  path: string,
  body: unknown,
  signal: AbortSignal,
): AsyncGenerator<Record<string, unknown>> {
  const response = await request('POST', path, body, signal)
  if (!response.body) throw new ApiError('The server sent an empty answer.', response.status)
  const reader = response.body
    .pipeThrough(new TextDecoderStream())
    .pipeThrough(new EventSourceParserStream())
    .getReader()
  try {
    for (;;) {
      let chunk: ReadableStreamReadResult<EventSourceMessage>
      try {
        chunk = await reader.read()
      } catch (error) {
        if (signal.aborted) throw error
        throw unreachable()
      }
      if (chunk.done) break
      const data = chunk.value.data
      if (!data) continue
      if (data === '[DONE]') return
      const frame = JSON.parse(data) as Record<string, unknown>
      const err = frame.error as { message?: string; code?: string; param?: string } | undefined
      if (err) throw new ApiError(err.message ?? 'generation failed', 200, err.code, err.param)
      yield frame
    }
  } finally {
    // Leaving early (Stop, or an error) must close the connection so the server stops.
    reader.cancel().catch(() => undefined)
  }
  throw new ApiError('The answer stopped before it was complete (the connection closed).', 0,
    'stream_truncated')
}
