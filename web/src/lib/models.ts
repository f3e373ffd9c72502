// GET /v1/models: what the server runs (chat engines and, with --clip, a CLIP model);
// POST /v1/models/{id}/load: load one now (several models, --load-on-demand, --keep-alive).
import { getJSON, sendJSON } from './api'

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

export async function listModels(): Promise<ModelCard[]> {
  return (await getJSON<{ data: ModelCard[] }>('/v1/models')).data
}

/** Load a model now; resolves once it is loaded (the server waits for the load). */
export async function loadModel(id: string): Promise<void> {
  await sendJSON('POST', `/v1/models/${encodeURIComponent(id)}/load`)
}

/** The picker's label: the name, and the state unless it is loaded. */
export function modelLabel(m: ModelCard): string {
  return m.state === 'loaded' ? m.id : `${m.id} (${m.state})`
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
