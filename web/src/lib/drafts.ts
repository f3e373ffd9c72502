// Unsent text, per conversation, kept in this browser until it is sent: the
// composer's message and a system prompt not yet saved on the server. The key
// '' is the new chat that has no conversation on the server yet.
import { load, save } from './persist'

export interface Draft {
  text?: string
  system?: string
}

const KEY = 'starchart.drafts'

export function loadDraft(id: string): Draft {
  return load<Record<string, Draft>>(KEY, {})[id] ?? {}
}

export function saveDraft(id: string, change: Draft): void {
  const all = load<Record<string, Draft>>(KEY, {})
  const next: Draft = { ...all[id], ...change }
  for (const field of ['text', 'system'] as const) if (next[field] === undefined) delete next[field]
  if (next.text === '') delete next.text
  if (Object.keys(next).length) all[id] = next
  else delete all[id]
  save(KEY, all)
}

/** Forget a field once it reached the server (sent, or saved with the conversation). */
export function clearDraft(id: string, field: keyof Draft): void {
  saveDraft(id, { [field]: undefined })
}
