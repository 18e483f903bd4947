/** The values of offline sync (push, pull, status, conflicts, watch) and their codecs. */

import { create } from "@bufbuild/protobuf";
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import {
  type Change as ChangeMessage,
  type Conflict as ConflictMessage,
  ConflictState,
  ConflictStrategy,
  type GetStatusResponse,
  type Mutation as MutationMessage,
  MutationOp,
  type MutationOutcome as OutcomeMessage,
  MutationSchema,
  type PullResponse,
  type PushResponse,
  PushResult as PushResultCode,
} from "./gen/tmcp/storage/v1/sync_pb.js";
import { decodeEntry, decodeValue, encodeTtl, encodeValue, int64, num, revisionOf } from "./codec.js";
import { decodeStatus, type StorageError } from "./errors.js";
import type { Entry, JsonValue, ValueInput } from "./models.js";

/** How the server settles a mutation whose `baseVersion` is stale. */
export type Strategy = "default" | "last_write_wins" | "merge" | "manual" | "keep_both";

/** What the server did with one pushed mutation. */
export type Result = "unspecified" | "applied" | "duplicate" | "conflict" | "rejected";

/** What a change did to its key. */
export type ChangeOp = "unspecified" | "put" | "delete" | "expire" | "touch";

/** One queued write: `value` set (Uint8Array raw, anything else JSON), or `delete: true`. */
export interface Mutation {
  /** Rises by exactly one per client, from 1. */
  readonly mutationId: number;
  readonly key: string;
  readonly value?: ValueInput;
  readonly delete?: boolean;
  readonly contentType?: string;
  /** Seconds until the entry expires, counted from when the server applies it. */
  readonly ttl?: number;
  /** The version the client last saw; undefined writes blindly (no conflict check). */
  readonly baseVersion?: number;
  readonly metadata?: Readonly<Record<string, string>>;
}

/** What the server did with one mutation. */
export interface MutationOutcome {
  readonly mutationId: number;
  readonly result: Result;
  /** For duplicate: the result stored the first time. */
  readonly originalResult: Result;
  /** applied: the new entry (no value); conflict: the server's entry. */
  readonly entry: Entry | undefined;
  readonly conflictId: string;
  /** rejected (or a duplicate of a rejected one): why. */
  readonly error: StorageError | undefined;
}

/** The answer to a push. */
export interface PushResult {
  readonly outcomes: readonly MutationOutcome[];
  readonly lastMutationId: number;
  readonly revision: number;
}

/** The current state of one changed key. */
export interface Change {
  readonly key: string;
  readonly op: ChangeOp;
  readonly revision: number;
  /** The entry with its value; undefined for delete and expire. */
  readonly entry: Entry | undefined;
  /** Set when a pushed mutation made the change. */
  readonly clientId: string;
  readonly mutationId: number;
  /** The key's version after the change (a deletion's too). */
  readonly version: number;
}

/** One page of changes since a cursor. */
export interface PullResult {
  readonly changes: readonly Change[];
  readonly cursor: string;
  readonly hasMore: boolean;
  /** The cursor was older than the retained history: drop local state first. */
  readonly reset: boolean;
  readonly lastMutationId: number;
  readonly revision: number;
}

/** What the server knows of a space and a client. */
export interface SyncStatus {
  readonly revision: number;
  readonly cursor: string;
  readonly lastMutationId: number;
  readonly lastPushTime: Date | undefined;
  readonly lastPullTime: Date | undefined;
  readonly openConflicts: number;
  readonly historyHorizonRevision: number;
  readonly historyHorizonTime: Date | undefined;
}

/** A conflict record. */
export interface Conflict {
  readonly conflictId: string;
  readonly key: string;
  readonly strategy: Strategy;
  readonly open: boolean;
  /** The server's value when the conflict arose (undefined: absent or deleted). */
  readonly serverValue: Uint8Array | JsonValue | undefined;
  /** The mutation's value (undefined: a deletion). */
  readonly clientValue: Uint8Array | JsonValue | undefined;
  readonly clientId: string;
  readonly mutationId: number;
  readonly baseVersion: number;
  readonly createdAt: Date | undefined;
  readonly resolvedAt: Date | undefined;
}

/** One message of a watch: changes, or a heartbeat; `cursor` resumes after it. */
export interface WatchEvent {
  readonly changes: readonly Change[];
  readonly cursor: string;
  readonly heartbeat: boolean;
}

const STRATEGIES: Readonly<Record<Strategy, ConflictStrategy>> = {
  default: ConflictStrategy.UNSPECIFIED,
  last_write_wins: ConflictStrategy.LAST_WRITE_WINS,
  merge: ConflictStrategy.MERGE,
  manual: ConflictStrategy.MANUAL,
  keep_both: ConflictStrategy.KEEP_BOTH,
};
const RESULTS: Readonly<Record<number, Result>> = {
  [PushResultCode.APPLIED]: "applied",
  [PushResultCode.DUPLICATE]: "duplicate",
  [PushResultCode.CONFLICT]: "conflict",
  [PushResultCode.REJECTED]: "rejected",
};
const OPS: Readonly<Record<number, ChangeOp>> = { 1: "put", 2: "delete", 3: "expire", 4: "touch" };

/** The wire number of a strategy. */
export function encodeStrategy(strategy: Strategy): ConflictStrategy {
  const number = STRATEGIES[strategy];
  if (number === undefined) throw new RangeError(`unknown conflict strategy ${strategy}`);
  return number;
}

function decodeStrategy(number: ConflictStrategy): Strategy {
  return (Object.keys(STRATEGIES) as Strategy[]).find((name) => STRATEGIES[name] === number) ?? "default";
}

/** The wire form of a queued mutation. */
export function encodeMutation(m: Mutation): MutationMessage {
  if (!m.delete && m.value === undefined) throw new TypeError(`mutation ${m.mutationId} needs a value or delete`);
  return create(MutationSchema, {
    mutationId: int64(m.mutationId, "mutationId"),
    op: m.delete ? MutationOp.DELETE : MutationOp.SET,
    key: m.key,
    value: m.delete || m.value === undefined ? undefined : encodeValue(m.value),
    contentType: m.contentType ?? "",
    ttl: m.ttl === undefined ? undefined : encodeTtl(m.ttl),
    baseVersion: m.baseVersion === undefined ? undefined : int64(m.baseVersion, "baseVersion"),
    metadata: { ...(m.metadata ?? {}) },
  });
}

/** One mutation outcome. */
export function decodeOutcome(message: OutcomeMessage): MutationOutcome {
  return {
    mutationId: num(message.mutationId),
    result: RESULTS[message.result] ?? "unspecified",
    originalResult: RESULTS[message.originalResult] ?? "unspecified",
    entry: message.entry === undefined ? undefined : decodeEntry(message.entry),
    conflictId: message.conflictId,
    error: message.status === undefined || message.status.code === 0 ? undefined : decodeStatus(message.status),
  };
}

/** A changed key. */
export function decodeChange(message: ChangeMessage): Change {
  return {
    key: message.key,
    op: OPS[message.op] ?? "unspecified",
    revision: num(message.revision),
    entry: message.entry === undefined ? undefined : decodeEntry(message.entry),
    clientId: message.clientId,
    mutationId: num(message.mutationId),
    version: num(message.version),
  };
}

/** A conflict record. */
export function decodeConflict(message: ConflictMessage): Conflict {
  return {
    conflictId: message.conflictId,
    key: message.key,
    strategy: decodeStrategy(message.strategy),
    open: message.state === ConflictState.OPEN,
    serverValue: decodeValue(message.serverEntry?.value),
    clientValue: decodeValue(message.clientEntry?.value),
    clientId: message.clientId,
    mutationId: num(message.mutationId),
    baseVersion: num(message.baseVersion),
    createdAt: when(message.createdAt),
    resolvedAt: when(message.resolvedAt),
  };
}

/** The answer to a push. */
export function decodePushResult(response: PushResponse): PushResult {
  return {
    outcomes: response.outcomes.map(decodeOutcome),
    lastMutationId: num(response.lastMutationId),
    revision: revisionOf(response.header),
  };
}

/** One page of a pull. */
export function decodePullResult(response: PullResponse): PullResult {
  return {
    changes: response.changes.map(decodeChange),
    cursor: response.cursor,
    hasMore: response.hasMore,
    reset: response.reset,
    lastMutationId: num(response.lastMutationId),
    revision: revisionOf(response.header),
  };
}

/** What the server knows of a space and a client. */
export function decodeSyncStatus(r: GetStatusResponse): SyncStatus {
  return {
    revision: revisionOf(r.header),
    cursor: r.cursor,
    lastMutationId: num(r.lastMutationId),
    lastPushTime: when(r.lastPushTime),
    lastPullTime: when(r.lastPullTime),
    openConflicts: num(r.openConflicts),
    historyHorizonRevision: num(r.historyHorizonRevision),
    historyHorizonTime: when(r.historyHorizonTime),
  };
}

/** A timestamp that may be absent. */
export function when(stamp: Timestamp | undefined): Date | undefined {
  return stamp === undefined ? undefined : timestampDate(stamp);
}
