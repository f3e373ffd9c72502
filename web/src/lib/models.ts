// GET /v1/models: what the server runs (chat engines and, with --clip, a CLIP model).
import { getJSON } from './api'

export interface ModelCard {
  id: string
  kind: 'chat' | 'clip' | string
  loaded: boolean
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
