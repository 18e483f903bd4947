/**
 * Errors thrown by the client, and the one place where transport errors become them
 * (mirrors clients/python/tmcp_storage/errors.py).
 *
 *     StorageError                  every failed call: code, reason, message, metadata, details
 *     ├── InvalidArgument           INVALID_ARGUMENT: INVALID_KEY, VALUE_TOO_LARGE, …
 *     ├── NotFound                  NOT_FOUND: KEY_NOT_FOUND
 *     ├── AlreadyExists             ALREADY_EXISTS: KEY_EXISTS; currentVersion
 *     ├── FailedPrecondition        FAILED_PRECONDITION
 *     │   └── VersionConflict       VERSION_MISMATCH; currentVersion
 *     ├── ResourceExhausted         RESOURCE_EXHAUSTED: SLOW_CONSUMER, message too large
 *     │   ├── QuotaExceeded         QUOTA_BYTES, QUOTA_KEYS; kind
 *     │   └── RateLimited           RATE_LIMITED; retryAfter (nothing was written)
 *     ├── OutOfRange                OUT_OF_RANGE: CURSOR_COMPACTED, MUTATION_GAP
 *     ├── PermissionDenied          PERMISSION_DENIED: SCOPE_MISSING, SPACE_FORBIDDEN
 *     ├── Unauthenticated           UNAUTHENTICATED: TOKEN_INVALID, TOKEN_EXPIRED
 *     ├── Unavailable               UNAVAILABLE: BACKEND_UNAVAILABLE, or the server unreachable
 *     ├── DeadlineExceeded          DEADLINE_EXCEEDED
 *     ├── Cancelled                 CANCELLED: the caller aborted the call
 *     └── Internal                  INTERNAL, UNKNOWN, DATA_LOSS
 *
 * The class comes from the `ErrorInfo.reason` (domain `storage.tmcp`) decoded from the
 * `grpc-status-details-bin` trailer when the server sent one the client knows, else from
 * the status code.
 */

import { type DescMessage, type Message, createRegistry, fromBinary } from "@bufbuild/protobuf";
import type { Any } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  BadRequestSchema,
  DebugInfoSchema,
  type ErrorInfo,
  ErrorInfoSchema,
  HelpSchema,
  LocalizedMessageSchema,
  PreconditionFailureSchema,
  QuotaFailureSchema,
  RequestInfoSchema,
  ResourceInfoSchema,
  type RetryInfo,
  RetryInfoSchema,
} from "./gen/google/rpc/error_details_pb.js";
import type { Status } from "./gen/google/rpc/status_pb.js";

/** The `ErrorInfo.domain` of the storage service. */
export const DOMAIN = "storage.tmcp";

/** gRPC status code names by number. */
export const CODE_NAMES: Readonly<Record<number, string>> = {
  0: "OK",
  1: "CANCELLED",
  2: "UNKNOWN",
  3: "INVALID_ARGUMENT",
  4: "DEADLINE_EXCEEDED",
  5: "NOT_FOUND",
  6: "ALREADY_EXISTS",
  7: "PERMISSION_DENIED",
  8: "RESOURCE_EXHAUSTED",
  9: "FAILED_PRECONDITION",
  10: "ABORTED",
  11: "OUT_OF_RANGE",
  12: "UNIMPLEMENTED",
  13: "INTERNAL",
  14: "UNAVAILABLE",
  15: "DATA_LOSS",
  16: "UNAUTHENTICATED",
};

const DETAILS = createRegistry(
  ErrorInfoSchema,
  RetryInfoSchema,
  BadRequestSchema,
  PreconditionFailureSchema,
  QuotaFailureSchema,
  ResourceInfoSchema,
  RequestInfoSchema,
  DebugInfoSchema,
  HelpSchema,
  LocalizedMessageSchema,
);

/** Fields of a StorageError besides its message. */
export interface ErrorFields {
  /** The gRPC status code (a number; see `codeName`). */
  readonly code: number;
  /** `ErrorInfo.reason` (e.g. `VERSION_MISMATCH`), or "" when the server sent none. */
  readonly reason?: string;
  /** `ErrorInfo.domain`; `storage.tmcp` for the storage service's own errors. */
  readonly domain?: string;
  /** `ErrorInfo.metadata`: e.g. `key`, `current_version`, `limit`. */
  readonly metadata?: Readonly<Record<string, string>>;
  /** Every decoded detail message (ErrorInfo, BadRequest, RetryInfo, …). */
  readonly details?: readonly Message[];
  readonly cause?: unknown;
}

/** A call failed; the base of every error the client throws for a call. */
export class StorageError extends Error {
  /** The gRPC status code. */
  readonly code: number;
  /** `ErrorInfo.reason`, or "". */
  readonly reason: string;
  /** `ErrorInfo.domain`, or "". */
  readonly domain: string;
  /** `ErrorInfo.metadata`. */
  readonly metadata: Readonly<Record<string, string>>;
  /** Every detail message of the status, decoded when its type is a known google.rpc one. */
  readonly details: readonly Message[];
  /** The server's message, written for the caller. */
  readonly rawMessage: string;

  constructor(message: string, fields: ErrorFields) {
    const label = fields.reason ? `${CODE_NAMES[fields.code] ?? fields.code} ${fields.reason}` : (CODE_NAMES[fields.code] ?? `${fields.code}`);
    super(`${message} (${label})`, fields.cause === undefined ? undefined : { cause: fields.cause });
    this.name = new.target.name;
    this.code = fields.code;
    this.reason = fields.reason ?? "";
    this.domain = fields.domain ?? "";
    this.metadata = { ...(fields.metadata ?? {}) };
    this.details = [...(fields.details ?? [])];
    this.rawMessage = message;
  }

  /** The name of the status code, e.g. `NOT_FOUND`. */
  get codeName(): string {
    return CODE_NAMES[this.code] ?? `${this.code}`;
  }

  /** The first detail message of the given schema, e.g. `detail(BadRequestSchema)`. */
  detail<T extends Message>(schema: DescMessage & { readonly typeName: T["$typeName"] }): T | undefined {
    return this.details.find((d): d is T => d.$typeName === schema.typeName);
  }

  /** Seconds the server asked the caller to wait (RetryInfo), if it asked. */
  get retryDelay(): number | undefined {
    const info = this.detail<RetryInfo>(RetryInfoSchema);
    if (info?.retryDelay === undefined) return undefined;
    return Number(info.retryDelay.seconds) + info.retryDelay.nanos / 1e9;
  }
}

/** A request field is malformed or out of bounds; `metadata.field` names it. */
export class InvalidArgument extends StorageError {}
/** The key is absent or expired. */
export class NotFound extends StorageError {}
/** A create-only write (`expectedVersion: 0`) found the key. */
export class AlreadyExists extends StorageError {
  /** The key's version on the server, when the server reported it. */
  get currentVersion(): number | undefined {
    return intOrUndefined(this.metadata["current_version"]);
  }
}
/** The system is not in the state the call requires. */
export class FailedPrecondition extends StorageError {}
/** A conditional write or delete expected another version of the key. */
export class VersionConflict extends FailedPrecondition {
  /** The key's version on the server, when the server reported it. */
  get currentVersion(): number | undefined {
    return intOrUndefined(this.metadata["current_version"]);
  }
}
/** A limit was reached: rate, stream buffer, or (subclass) quota. */
export class ResourceExhausted extends StorageError {}
/** The write would take the space over its byte or key limit. */
export class QuotaExceeded extends ResourceExhausted {
  /** `"bytes"` or `"keys"`: the limit the write ran into. */
  get kind(): "bytes" | "keys" | undefined {
    if (this.reason === "QUOTA_BYTES") return "bytes";
    if (this.reason === "QUOTA_KEYS") return "keys";
    return undefined;
  }
}
/**
 * The space's write rate limit refused the call. Nothing was written: the same call may
 * be made again after `retryAfter` seconds.
 */
export class RateLimited extends ResourceExhausted {
  /** Seconds to wait before the call is admitted (the server's RetryInfo). */
  get retryAfter(): number {
    const millis = intOrUndefined(this.metadata["retry_after_ms"]);
    return this.retryDelay ?? (millis === undefined ? 1 : millis / 1000);
  }
}
/** A cursor or mutation id lies outside what the server can serve. */
export class OutOfRange extends StorageError {}
/** The token lacks the scope, or does not reach the space. */
export class PermissionDenied extends StorageError {}
/** No token, or a malformed, badly signed or expired one. */
export class Unauthenticated extends StorageError {}
/** The server or its database cannot be reached; thrown once retries are spent. */
export class Unavailable extends StorageError {}
/** The call did not finish within its timeout. */
export class DeadlineExceeded extends StorageError {}
/** The caller aborted the call. */
export class Cancelled extends StorageError {}
/** The server failed unexpectedly. */
export class Internal extends StorageError {}

type ErrorClass = new (message: string, fields: ErrorFields) => StorageError;

const INVALID_REASONS = [
  "INVALID_ARGUMENT",
  "INVALID_KEY",
  "INVALID_VALUE",
  "VALUE_TOO_LARGE",
  "INVALID_JSON",
  "INVALID_METADATA",
  "INVALID_TTL",
  "INVALID_CONTENT_TYPE",
  "INVALID_PAGE_TOKEN",
  "INVALID_SPACE",
  "TOO_MANY_OPERATIONS",
];

const BY_REASON: Readonly<Record<string, ErrorClass>> = {
  KEY_NOT_FOUND: NotFound,
  KEY_EXISTS: AlreadyExists,
  VERSION_MISMATCH: VersionConflict,
  QUOTA_BYTES: QuotaExceeded,
  QUOTA_KEYS: QuotaExceeded,
  SCOPE_MISSING: PermissionDenied,
  SPACE_FORBIDDEN: PermissionDenied,
  TOKEN_INVALID: Unauthenticated,
  TOKEN_EXPIRED: Unauthenticated,
  BACKEND_UNAVAILABLE: Unavailable,
  CURSOR_COMPACTED: OutOfRange,
  MUTATION_GAP: OutOfRange,
  SLOW_CONSUMER: ResourceExhausted,
  RATE_LIMITED: RateLimited,
  ...Object.fromEntries(INVALID_REASONS.map((reason) => [reason, InvalidArgument])),
};

const BY_CODE: Readonly<Record<number, ErrorClass>> = {
  [Code.Canceled]: Cancelled,
  [Code.InvalidArgument]: InvalidArgument,
  [Code.NotFound]: NotFound,
  [Code.AlreadyExists]: AlreadyExists,
  [Code.FailedPrecondition]: FailedPrecondition,
  [Code.ResourceExhausted]: ResourceExhausted,
  [Code.OutOfRange]: OutOfRange,
  [Code.PermissionDenied]: PermissionDenied,
  [Code.Unauthenticated]: Unauthenticated,
  [Code.Unavailable]: Unavailable,
  [Code.DeadlineExceeded]: DeadlineExceeded,
  [Code.Internal]: Internal,
  [Code.Unknown]: Internal,
  [Code.DataLoss]: Internal,
};

/** Choose the StorageError class for a status and build it (pure; for tests too). */
export function buildError(code: number, message: string, details: readonly Message[], cause?: unknown): StorageError {
  const info = errorInfo(details);
  const reason = info?.reason ?? "";
  const byReason = info !== undefined && info.domain === DOMAIN ? BY_REASON[reason] : undefined;
  const kind = byReason ?? BY_CODE[code] ?? StorageError;
  return new kind(message, {
    code,
    reason,
    domain: info?.domain ?? "",
    metadata: info?.metadata ?? {},
    details,
    cause,
  });
}

/**
 * Translate whatever a call threw into the matching StorageError. A request that never
 * reached the server (fetch failed: offline, connection refused, CORS refused) is
 * Unavailable, so that it is retried and an offline store keeps its queue.
 */
export function fromError(error: unknown): StorageError {
  if (error instanceof StorageError) return error;
  const connect = ConnectError.from(error);
  if (!connect.isWireError && connect.code === Code.Unknown && connect.cause instanceof TypeError) {
    return buildError(Code.Unavailable, `the server could not be reached: ${connect.rawMessage}`, [], error);
  }
  const details = connect.details.map((d) =>
    "desc" in d ? (d.value as Message) : decodeDetail(d.type, d.value),
  );
  return buildError(connect.code, connect.rawMessage, details, error);
}

/** The error a `google.rpc.Status` inside a response (batch item, push outcome) stands for. */
export function decodeStatus(status: Status): StorageError {
  return buildError(
    status.code,
    status.message,
    status.details.map((any: Any) => decodeDetail(any.typeUrl.slice(any.typeUrl.lastIndexOf("/") + 1), any.value)),
  );
}

/** A status detail of a known google.rpc type, decoded; others stay a packed Any. */
function decodeDetail(typeName: string, value: Uint8Array): Message {
  const schema = DETAILS.getMessage(typeName);
  if (schema !== undefined) {
    try {
      return fromBinary(schema, value);
    } catch {
      // An undecodable detail is kept packed rather than failing the whole error.
    }
  }
  return { $typeName: "google.protobuf.Any", typeUrl: `type.googleapis.com/${typeName}`, value } as Any;
}

function errorInfo(details: readonly Message[]): ErrorInfo | undefined {
  const infos = details.filter((d): d is ErrorInfo => d.$typeName === ErrorInfoSchema.typeName);
  return infos.find((info) => info.domain === DOMAIN) ?? infos[0];
}

function intOrUndefined(text: string | undefined): number | undefined {
  if (text === undefined || !/^-?\d+$/.test(text)) return undefined;
  return Number(text);
}
