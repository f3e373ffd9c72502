// Generation parameters: the controls' state, persisted in this browser, reset
// from the server's defaults; named presets and the default system prompt for
// new chats live in this browser too.
import { reactive, watch } from 'vue'
import { getJSON } from './api'
import { load, save } from './persist'

export interface Params {
  temperature: number
  top_k: number
  top_p: number
  min_p: number
  max_tokens: number
  repetition_penalty: number
  presence_penalty: number
  frequency_penalty: number
  /** null: a new random seed every time. */
  seed: number | null
  /** Generation stops before any of these strings (at most 16). */
  stop: string[]
  /** A JSON schema the answers must follow (response_format json_schema); '' = none. */
  json_schema: string
}

export type SliderKey = Exclude<keyof Params, 'seed' | 'stop' | 'json_schema'>

export interface ServerDefaults extends Params {
  system_prompt: string
}

/** One slider: its range, its keyboard step, and how the request names it. */
export interface Slider {
  key: SliderKey
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
  { key: 'min_p', label: 'Min-p', min: 0, max: 1, step: 0.01,
    help: 'Drop tokens less likely than this fraction of the likeliest (0 = off).' },
  { key: 'max_tokens', label: 'Max new tokens', min: 1, max: 4096, step: 1,
    help: 'The answer stops after this many tokens.' },
  { key: 'repetition_penalty', label: 'Repetition penalty', min: 0.5, max: 2, step: 0.01,
    help: 'Above 1 discourages repeating tokens (1 = off).' },
  { key: 'presence_penalty', label: 'Presence penalty', min: -2, max: 2, step: 0.05,
    help: 'Above 0 pushes towards tokens not used yet (0 = off).' },
  { key: 'frequency_penalty', label: 'Frequency penalty', min: -2, max: 2, step: 0.05,
    help: 'Above 0 discourages tokens in proportion to how often they appeared (0 = off).' },
]

const FALLBACK: Params = {
  temperature: 0.2, top_k: 50, top_p: 0.95, min_p: 0, max_tokens: 1024,
  repetition_penalty: 1.2, presence_penalty: 0, frequency_penalty: 0, seed: null, stop: [],
  json_schema: '',
}

const STORAGE = 'starchart.params'

// Older pages stored fewer fields: fill in the rest.
export const params = reactive<Params>({ ...FALLBACK, ...load<Partial<Params>>(STORAGE, {}) })
/** Whether the values came from the server at least once (else the first load fetches them). */
let stored = localStorage.getItem(STORAGE) !== null

watch(params, (value) => {
  stored = true
  save(STORAGE, value)
})

/** A slider value on its grid, without binary-fraction noise (0.15, not 0.15000000000000002). */
export function onStep(slider: Slider, value: number): number {
  const decimals = (String(slider.step).split('.')[1] ?? '').length
  const snapped = slider.min + Math.round((value - slider.min) / slider.step) * slider.step
  return Number(Math.min(slider.max, Math.max(slider.min, snapped)).toFixed(decimals))
}

export async function serverDefaults(): Promise<ServerDefaults> {
  return getJSON<ServerDefaults>('/v1/defaults')
}

function assign(values: Partial<Params>): void {
  for (const slider of SLIDERS) {
    const value = values[slider.key]
    if (typeof value === 'number') params[slider.key] = value
  }
  params.seed = values.seed ?? null
  params.stop = [...(values.stop ?? [])]
  params.json_schema = values.json_schema ?? ''
}

/** Put back the server's sampling defaults (GET /v1/defaults). The system prompt
 * belongs to the conversation and is left alone. */
export async function resetParams(): Promise<void> {
  assign(await serverDefaults())
}

/** On a first visit, start from the server's defaults rather than this file's guesses. */
export async function initParams(): Promise<void> {
  if (stored) return
  const defaults = await serverDefaults()
  // A value set while they were on their way is the user's: it stays.
  if (!stored) assign(defaults)
}

/** The request fields for the current parameters. */
export function requestFields(): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  for (const slider of SLIDERS) out[slider.key] = Number(params[slider.key])
  if (params.seed !== null && Number.isInteger(params.seed)) out.seed = params.seed
  const stop = params.stop.filter((s) => s.length)
  if (stop.length) out.stop = stop.slice(0, 16)
  return out
}

/** Why the JSON schema field cannot be sent, or '' when it can (or is empty). */
export function schemaProblem(text: string): string {
  if (!text.trim()) return ''
  let schema: unknown
  try {
    schema = JSON.parse(text)
  } catch (e) {
    return `The JSON schema is not valid JSON: ${(e as Error).message}.`
  }
  if (typeof schema !== 'object' || schema === null || Array.isArray(schema)) {
    return 'The JSON schema must be a JSON object, such as {"type": "object", "properties": {…}}.'
  }
  return ''
}

/** The request's response_format for the JSON schema field ({} when it is empty).
 * Throws with the reason when the field holds no usable schema: nothing is sent then. */
export function responseFormat(): Record<string, unknown> {
  const text = params.json_schema
  if (!text.trim()) return {}
  const problem = schemaProblem(text)
  if (problem) throw new Error(`${problem} Fix it under Parameters (nothing was sent).`)
  return { response_format: { type: 'json_schema',
    json_schema: { name: 'answer', schema: JSON.parse(text), strict: true } } }
}

// Named presets: snapshots of the parameters, kept in this browser.
const PRESETS = 'starchart.presets'
export const presets = reactive<Record<string, Params>>(load(PRESETS, {}))
watch(presets, (value) => save(PRESETS, value))

export function savePreset(name: string): void {
  presets[name] = JSON.parse(JSON.stringify(params))
}

export function loadPreset(name: string): void {
  const preset = presets[name]
  if (preset) assign({ ...FALLBACK, ...preset })
}

export function deletePreset(name: string): void {
  delete presets[name]
}

// The system prompt a new chat starts with (this browser); null: the server's default.
const DEFAULT_SYSTEM = 'starchart.defaultSystemPrompt'
export const newChatDefaults = reactive<{ systemPrompt: string | null }>({
  systemPrompt: load<string | null>(DEFAULT_SYSTEM, null),
})
watch(newChatDefaults, (value) => save(DEFAULT_SYSTEM, value.systemPrompt))
