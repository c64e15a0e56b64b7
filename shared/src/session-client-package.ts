/**
 * The public surface of the installable `@latchkey/session-client` package
 * (packages/session-client): the browser and Node session client and its errors. Built by
 * scripts/build-packages.mjs; nothing here is copied.
 */
export * from './session-client.js'
export type { TabChannel, TabLocks, TabMessage } from './session-tabs.js'
export { type SessionClientErrorCode, sessionClientErrors } from './session-client-errors.js'
export { LatchkeyError, isLatchkeyError } from './errors.js'
export { type Clock, systemClock } from './clock.js'
