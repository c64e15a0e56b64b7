import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { AccessToken } from '#shared/access-token-verifier.js'
import { resourceError } from '../errors.js'
import { MAX_NOTE_LENGTH, type NotesStore } from '../notes-store.js'

export const NOTES_READ = 'notes:read'
export const NOTES_WRITE = 'notes:write'

function caller (request: FastifyRequest): AccessToken {
  if (request.accessToken === null) throw new Error('requireToken did not run')
  return request.accessToken
}

/** Per-user notes, owned by the token's `sub`. */
export async function notesRoutes (app: FastifyInstance, options: { store: NotesStore }): Promise<void> {
  const { store } = options

  app.get('/api/notes', { onRequest: app.requireToken([NOTES_READ]) }, async (request) => {
    return { notes: store.list(caller(request).sub) }
  })

  app.post<{ Body: { text: string } }>('/api/notes', {
    onRequest: app.requireToken([NOTES_WRITE]),
    schema: {
      body: {
        type: 'object',
        required: ['text'],
        additionalProperties: false,
        properties: { text: { type: 'string', minLength: 1, maxLength: MAX_NOTE_LENGTH } }
      }
    }
  }, async (request, reply) => {
    const note = store.add(caller(request).sub, request.body.text)
    return await reply.code(201).send(note)
  })

  app.delete<{ Params: { id: string } }>('/api/notes/:id', {
    onRequest: app.requireToken([NOTES_WRITE]),
    schema: { params: { type: 'object', properties: { id: { type: 'string', maxLength: 64 } } } }
  }, async (request, reply) => {
    if (!store.remove(caller(request).sub, request.params.id)) throw resourceError('RS_NOTE_NOT_FOUND')
    return await reply.code(204).send()
  })
}
