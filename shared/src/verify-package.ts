/**
 * The public surface of the installable `@latchkey/verify` package (packages/verify): the
 * framework-agnostic access-token verifier and the errors it throws. The Fastify plugin is
 * its `@latchkey/verify/fastify` entry (access-token-plugin.ts), so that a service without
 * Fastify never loads it. Built by scripts/build-packages.mjs; nothing here is copied.
 */
export {
  type AccessRequirement, type AccessToken, type AccessTokenVerifierOptions, type TokenKind, type VerificationOutcome,
  AccessTokenVerifier, CLOCK_TOLERANCE_S, DEFAULT_REALM, hasScopes
} from './access-token-verifier.js'
export { type Clock, systemClock } from './clock.js'
export { LatchkeyError, errorBody, isLatchkeyError } from './errors.js'
export type { FetchLike, JwksTuning } from './remote-jwks.js'
export { ACCESS_TOKEN_ALGORITHMS, ACCESS_TOKEN_TYP, type AccessTokenAlg } from './token-format.js'
