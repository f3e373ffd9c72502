// GET /v1/models: what the server runs (chat engines and, with --clip, a CLIP model);
// POST /v1/models/{id}/load: load one now (several models, --load-on-demand, --keep-alive).
import type { Ref } from 'vue'
import { connection, getJSON, sendJSON } from './api'

export type ModelState = 'loaded' | 'loading' | 'unloaded' | 'failed'

export interface ModelCard {
  id: string
  kind: 'chat' | 'clip' | string
  loaded: boolean
  state: ModelState
  /** What it takes once loaded, by the planner's estimate (what --memory-budget counts). */
  memory_bytes: number | null
  load_error?: string
  engine?: string
  dtype?: string | null
  quantization?: string | null
  n_ctx?: number
  weight_bytes?: number | null
  [more: string]: unknown
}

/** ``poll``: a timed re-read, logged at DEBUG by the server (see api.ts). */
export async function listModels(poll = false): Promise<ModelCard[]> {
  return (await getJSON<{ data: ModelCard[] }>('/v1/models', poll)).data
}

/** Load a model now; resolves once it is loaded (the server waits for the load). */
export async function loadModel(id: string): Promise<void> {
  await sendJSON('POST', `/v1/models/${encodeURIComponent(id)}/load`)
}

/** What the picker shows for a model: its state, or that the server cannot be reached. */
export function shownState(m: ModelCard): ModelState | 'unreachable' {
  return connection.online ? m.state : 'unreachable'
}

/** The picker's label: the name, and the state unless it is loaded. */
export function modelLabel(m: ModelCard): string {
  const state = shownState(m)
  return state === 'loaded' ? m.id : `${m.id} (${state})`
}

// How often an open page reads the model list again: models load and unload while it
// is open (at start-up, on demand, by POST .../load|unload, --keep-alive), and a page
// that asks nothing would not notice the server going away either. Sooner while a
// load is under way, so the picker says "loaded" soon after the server does.
export const MODELS_POLL_MS = 5000
export const MODELS_LOADING_POLL_MS = 1000

/**
 * Keep ``models`` as the server has them: read now by ``refresh`` (which throws, for
 * the caller to report), then every few seconds while the tab is visible and the
 * server reachable (the page's reconnect check takes over while it is not). A list
 * asked for before a local change (``changed``) is dropped, so it cannot undo it.
 */
export function followModels(models: Ref<ModelCard[]>, onList: () => void = () => undefined) {
  let timer = 0
  let version = 0
  let stopped = false

  async function refresh(poll = false): Promise<void> {
    const asked = version
    const listed = await listModels(poll)
    if (asked !== version) return
    models.value = listed
    onList()
    schedule()
  }

  function schedule(): void {
    window.clearTimeout(timer)
    if (stopped) return
    const loading = models.value.some((m) => m.state === 'loading')
    timer = window.setTimeout(poll, loading ? MODELS_LOADING_POLL_MS : MODELS_POLL_MS)
  }

  async function poll(): Promise<void> {
    // Failures are for the page's other requests to report: an unreachable server
    // shows its banner (request() marks it), anything else keeps the last list.
    if (connection.online && document.visibilityState === 'visible') {
      await refresh(true).catch(() => undefined)
    }
    schedule()
  }

  const onVisible = () => {
    if (document.visibilityState === 'visible') void poll()
  }
  document.addEventListener('visibilitychange', onVisible)
  schedule()

  return {
    refresh,
    /** A local change to ``models`` (a load started here): lists already asked for are stale. */
    changed(): void {
      version++
      schedule()
    },
    stop(): void {
      stopped = true
      window.clearTimeout(timer)
      document.removeEventListener('visibilitychange', onVisible)
    },
  }
}

export function formatBytes(n: number | null | undefined): string {
  if (n === null || n === undefined) return '—'
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let i = 0
  let value = n
  while (value >= 1024 && i < units.length - 1) {
    value /= 1024
    i++
  }
  return `${value.toFixed(i ? 1 : 0)} ${units[i]}`
}
