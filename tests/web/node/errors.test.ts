// Pure unit tests of the error translation (no server): the class comes from the
// ErrorInfo reason of the storage domain, else from the code; details are decoded.

import assert from "node:assert/strict";
import { test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { DurationSchema, anyPack } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  FailedPrecondition,
  Internal,
  OutOfRange,
  QuotaExceeded,
  RateLimited,
  ResourceExhausted,
  StorageError,
  Unavailable,
  VersionConflict,
  decodeStatus,
  fromError,
} from "../../../clients/web/src/index.js";
import { ErrorInfoSchema, RetryInfoSchema } from "../../../clients/web/src/gen/google/rpc/error_details_pb.js";
import { StatusSchema } from "../../../clients/web/src/gen/google/rpc/status_pb.js";

function status(code: number, reason: string, domain = "storage.tmcp", metadata: Record<string, string> = {}) {
  return create(StatusSchema, {
    code,
    message: `m-${reason}`,
    details: [anyPack(ErrorInfoSchema, create(ErrorInfoSchema, { reason, domain, metadata }))],
  });
}

test("the reason of the storage domain picks the class", () => {
  const quota = decodeStatus(status(Code.ResourceExhausted, "QUOTA_KEYS"));
  assert.ok(quota instanceof QuotaExceeded && quota instanceof ResourceExhausted);
  assert.equal(quota.kind, "keys");
  assert.equal(quota.message, "m-QUOTA_KEYS (RESOURCE_EXHAUSTED QUOTA_KEYS)");
  const stale = decodeStatus(status(Code.FailedPrecondition, "VERSION_MISMATCH", "storage.tmcp", { current_version: "4" }));
  assert.ok(stale instanceof VersionConflict);
  assert.equal(stale.currentVersion, 4);
  assert.ok(decodeStatus(status(Code.OutOfRange, "MUTATION_GAP")) instanceof OutOfRange);
  const limited = decodeStatus(status(Code.ResourceExhausted, "RATE_LIMITED", "storage.tmcp", { retry_after_ms: "250" }));
  assert.ok(limited instanceof RateLimited && limited instanceof ResourceExhausted);
  assert.equal(limited.retryAfter, 0.25);
});

test("another domain's reason, or an unknown one, falls back to the code", () => {
  const foreign = decodeStatus(status(Code.FailedPrecondition, "VERSION_MISMATCH", "other.example"));
  assert.ok(foreign instanceof FailedPrecondition && !(foreign instanceof VersionConflict));
  assert.equal(foreign.reason, "VERSION_MISMATCH");
  assert.ok(decodeStatus(status(Code.Unknown, "SOMETHING_NEW")) instanceof Internal);
  const aborted = decodeStatus(create(StatusSchema, { code: Code.Aborted, message: "a" }));
  assert.equal(aborted.constructor, StorageError);
  assert.equal(aborted.codeName, "ABORTED");
});

test("RetryInfo is decoded into retryDelay; a failed fetch is Unavailable", () => {
  const info = create(RetryInfoSchema, { retryDelay: create(DurationSchema, { seconds: 1n, nanos: 500_000_000 }) });
  const wire = new ConnectError("busy", Code.Unavailable, undefined, [{ desc: RetryInfoSchema, value: info }]);
  const busy = fromError(wire);
  assert.ok(busy instanceof Unavailable);
  assert.equal(busy.retryDelay, 1.5);
  const offline = fromError(new TypeError("Failed to fetch"));
  assert.ok(offline instanceof Unavailable);
  assert.equal(offline.codeName, "UNAVAILABLE");
});
