// Talking to the starchart server: JSON calls, SSE streams and readable errors.
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
  context_length_exceeded: 'Shorten the message or start a new conversation.',
  invalid_api_key: 'Paste an API key with the key button at the top right.',
  model_not_ready: 'The model is still loading; try again in a moment.',
}

/** What the page shows for an error: the server's message plus what to do about it. */
export function describe(error: unknown): string {
  if (error instanceof ApiError) {
    const hint = error.code ? HINTS[error.code] : undefined
    return hint ? `${error.message} ${hint}` : error.message
  }
  return error instanceof Error ? error.message : String(error)
}

function unreachable(): ApiError {
  return new ApiError(
    'Cannot reach the starchart server: it may have stopped. Start it again with' +
      ' `starchart serve` (or `make run`) and retry.',
    0,
    'server_unreachable',
  )
}

function headers(json: boolean): Record<string, string> {
  const out: Record<string, string> = {}
  if (json) out['Content-Type'] = 'application/json'
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
): Promise<Response> {
  let response: Response
  try {
    response = await fetch(path, {
      method,
      headers: headers(body !== undefined),
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

export async function getJSON<T>(path: string): Promise<T> {
  return (await request('GET', path)).json() as Promise<T>
}

export async function sendJSON<T>(method: string, path: string, body?: unknown): Promise<T> {
  return (await request(method, path, body ?? {})).json() as Promise<T>
}

/** Whether a GET on ``path`` exists on this server (a 404 means it does not). */
export async function routeExists(path: string): Promise<boolean> {
  try {
    await request('GET', path)
    return true
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) return false
    throw error
  }
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
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader()
  let buffer = ''
  try {
    for (;;) {
      let chunk: ReadableStreamReadResult<string>
      try {
        chunk = await reader.read()
      } catch (error) {
        if (signal.aborted) throw error
        throw unreachable()
      }
      if (chunk.done) break
      buffer += chunk.value
      let end: number
      while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
        const event = buffer.slice(0, end)
        buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, '')
        const data = event
          .split(/\r?\n/)
          .filter((line) => line.startsWith('data:'))
          .map((line) => line.slice(5).trimStart())
          .join('\n')
        if (!data) continue
        if (data === '[DONE]') return
        const frame = JSON.parse(data) as Record<string, unknown>
        const err = frame.error as { message?: string; code?: string; param?: string } | undefined
        if (err) throw new ApiError(err.message ?? 'generation failed', 200, err.code, err.param)
        yield frame
      }
    }
  } finally {
    // Leaving early (Stop, or an error) must close the connection so the server stops.
    reader.cancel().catch(() => undefined)
  }
  throw new ApiError('The answer stopped before it was complete (the connection closed).', 0,
    'stream_truncated')
}
