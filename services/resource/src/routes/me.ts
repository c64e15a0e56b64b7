import type { FastifyInstance } from 'fastify'

/** `GET /api/me`: who the token says the caller is. Any valid token will do. */
export async function meRoutes (app: FastifyInstance): Promise<void> {
  app.get('/api/me', { onRequest: app.requireToken() }, async (request) => {
    const token = request.accessToken
    if (token === null) throw new Error('requireToken did not run')
    // The user's name (OpenID Connect Core §5.1 `preferred_username`), on user tokens only.
    const name = token.claims.preferred_username
    return { sub: token.sub, preferred_username: typeof name === 'string' ? name : null, client_id: token.client_id, scope: token.scope, sid: token.sid ?? null, exp: token.exp }
  })
}
