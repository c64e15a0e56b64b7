/**
 * Per-user notes, held in memory: the resource service is a demonstration upstream and
 * stays stateless towards Redis. Notes die with the process and are not shared between
 * replicas. Bounded per user so a single token cannot grow the heap without limit.
 */
import { randomUUID } from 'node:crypto'
import type { Clock } from '#shared/clock.js'
import { resourceError } from './errors.js'

export const MAX_NOTE_LENGTH = 2000
export const MAX_NOTES_PER_USER = 500

export interface Note {
  readonly id: string
  readonly text: string
  readonly created_at: string
}

export class NotesStore {
  readonly #clock: Clock
  readonly #byOwner = new Map<string, Map<string, Note>>()

  constructor (clock: Clock) {
    this.#clock = clock
  }

  list (owner: string): Note[] {
    return [...(this.#byOwner.get(owner)?.values() ?? [])]
  }

  add (owner: string, text: string): Note {
    let notes = this.#byOwner.get(owner)
    if (notes === undefined) {
      notes = new Map()
      this.#byOwner.set(owner, notes)
    }
    if (notes.size >= MAX_NOTES_PER_USER) throw resourceError('RS_TOO_MANY_NOTES')
    const note: Note = Object.freeze({ id: randomUUID(), text, created_at: new Date(this.#clock.now()).toISOString() })
    notes.set(note.id, note)
    return note
  }

  /** True when the owner had that note. Another owner's id is indistinguishable from an unknown one. */
  remove (owner: string, id: string): boolean {
    const notes = this.#byOwner.get(owner)
    if (notes === undefined || !notes.delete(id)) return false
    if (notes.size === 0) this.#byOwner.delete(owner)
    return true
  }

  stats (): { owners: number, notes: number } {
    let count = 0
    for (const notes of this.#byOwner.values()) count += notes.size
    return { owners: this.#byOwner.size, notes: count }
  }
}
