// Generation parameters: the sliders' state, persisted in the browser, reset from the server.
import { reactive, watch } from 'vue'
import { getJSON } from './api'
import { load, save } from './persist'

export interface Params {
  temperature: number
  top_k: number
  top_p: number
  max_tokens: number
  repetition_penalty: number
  /** null: a new random seed every time. */
  seed: number | null
}

export interface ServerDefaults extends Params {
  system_prompt: string
}

/** One slider: its range, and how the request names it. */
export interface Slider {
  key: Exclude<keyof Params, 'seed'>
  label: string
  min: number
  max: number
  step: number
  help: string
}

export const SLIDERS: Slider[] = [
  { key: 'temperature', label: 'Temperature', min: 0, max: 2, step: 0.05,
    help: '0 always picks the likeliest token; higher is more varied.' },
  { key: 'top_k', label: 'Top-k', min: 0, max: 200, step: 1,
    help: 'Sample among the k likeliest tokens (0 = off).' },
  { key: 'top_p', label: 'Top-p', min: 0.01, max: 1, step: 0.01,
    help: 'Sample among the likeliest tokens holding this much probability.' },
  { key: 'max_tokens', label: 'Max new tokens', min: 1, max: 4096, step: 1,
    help: 'The answer stops after this many tokens.' },
  { key: 'repetition_penalty', label: 'Repetition penalty', min: 0.5, max: 2, step: 0.01,
    help: 'Above 1 discourages repeating tokens (1 = off).' },
]

const STORAGE = 'starchart.params'

export const params = reactive<Params>(
  load<Params>(STORAGE, {
    temperature: 0.2, top_k: 50, top_p: 0.95, max_tokens: 1024, repetition_penalty: 1.2,
    seed: null,
  }),
)
/** Whether the values came from the server at least once (else the first load fetches them). */
let stored = localStorage.getItem(STORAGE) !== null

watch(params, (value) => {
  stored = true
  save(STORAGE, value)
})

export async function serverDefaults(): Promise<ServerDefaults> {
  return getJSON<ServerDefaults>('/v1/defaults')
}

/** Put back the server's defaults (GET /v1/defaults); returns them for the system prompt. */
export async function resetParams(): Promise<ServerDefaults> {
  const defaults = await serverDefaults()
  for (const slider of SLIDERS) params[slider.key] = defaults[slider.key]
  params.seed = defaults.seed ?? null
  return defaults
}

/** On a first visit, start from the server's defaults rather than this file's guesses. */
export async function initParams(): Promise<void> {
  if (!stored) await resetParams()
}

/** The request fields for the current parameters. */
export function requestFields(): Record<string, number> {
  const out: Record<string, number> = {}
  for (const slider of SLIDERS) out[slider.key] = Number(params[slider.key])
  if (params.seed !== null && Number.isInteger(params.seed)) out.seed = params.seed
  return out
}
