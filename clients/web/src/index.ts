/**
 * The TypeScript / browser client of the TMCP storage service over gRPC-Web.
 *
 * `StorageClient` (client.ts) makes the calls; `OfflineStore` (offline.ts) keeps a space
 * in IndexedDB and syncs it; errors.ts draws the error classes. The generated messages
 * and service descriptors are under `./gen` for callers that need them directly.
 */

export { StorageClient, type CallSettings, type ClientOptions, type TokenSource } from "./client.js";
export * from "./errors.js";
export type * from "./models.js";
export { OfflineStore, type ConflictHandler, type OfflineStoreOptions } from "./offline.js";
export type {
  Change,
  ChangeOp,
  Conflict,
  Mutation,
  MutationOutcome,
  PullResult,
  PushResult,
  Result,
  Strategy,
  SyncStatus,
  WatchEvent,
} from "./sync.js";
