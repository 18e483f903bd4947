/** Requests and results of the Batch service (BatchGet, BatchSet, BatchDelete, Execute). */

import { create } from "@bufbuild/protobuf";
import type { Status } from "./gen/google/rpc/status_pb.js";
import {
  type BatchDeleteItem,
  BatchDeleteItemSchema,
  type BatchSetItem,
  BatchSetItemSchema,
  type Operation as OperationMessage,
  OperationSchema,
} from "./gen/tmcp/storage/v1/batch_pb.js";
import type { Entry as EntryMessage, QuotaUsage as UsageMessage } from "./gen/tmcp/storage/v1/types_pb.js";
import { decodeEntry, decodeUsage, encodeTime, encodeTtl, encodeValue, int64, revisionOf } from "./codec.js";
import { decodeStatus } from "./errors.js";
import type { BatchResult, DeleteItem, ItemResult, Operation, SetItem } from "./models.js";

/** The fields of a write shared by Put and a batch item. */
export function writeFields(item: SetItem) {
  return {
    key: item.key,
    value: encodeValue(item.value),
    contentType: item.contentType ?? "",
    expectedVersion: item.expectedVersion === undefined ? undefined : int64(item.expectedVersion, "expectedVersion"),
    ttl: item.ttl === undefined ? undefined : encodeTtl(item.ttl),
    expiresAt: item.expiresAt === undefined ? undefined : encodeTime(item.expiresAt),
    keepTtl: item.keepTtl ?? false,
    metadata: { ...(item.metadata ?? {}) },
  };
}

/** The wire form of one batch write (the options of put). */
export function encodeSetItem(item: SetItem): BatchSetItem {
  return create(BatchSetItemSchema, writeFields(item));
}

/** The wire form of one batch delete; a plain string deletes unconditionally. */
export function encodeDeleteItem(item: DeleteItem | string): BatchDeleteItem {
  const { key, expectedVersion } = typeof item === "string" ? { key: item, expectedVersion: undefined } : item;
  return create(BatchDeleteItemSchema, {
    key,
    expectedVersion: expectedVersion === undefined ? undefined : int64(expectedVersion, "expectedVersion"),
  });
}

/** The wire form of one step of Execute. */
export function encodeOperation(op: Operation): OperationMessage {
  switch (op.op) {
    case "get":
      return create(OperationSchema, { kind: { case: "get", value: { key: op.key } } });
    case "set":
      return create(OperationSchema, { kind: { case: "set", value: encodeSetItem(op) } });
    case "delete":
      return create(OperationSchema, { kind: { case: "delete", value: encodeDeleteItem(op) } });
  }
}

interface WireResult {
  key: string;
  status?: Status | undefined;
  entry?: EntryMessage | undefined;
  found?: boolean;
  deleted?: boolean;
}

/** One result per item, in request order, each with its own error or none. */
export function decodeBatch(response: {
  header?: { revision: bigint } | undefined;
  results: WireResult[];
  usage?: UsageMessage | undefined;
}): BatchResult {
  const results: ItemResult[] = response.results.map((r) => ({
    key: r.key,
    error: r.status !== undefined && r.status.code !== 0 ? decodeStatus(r.status) : undefined,
    entry: r.entry === undefined ? undefined : decodeEntry(r.entry),
    found: r.found ?? false,
    deleted: r.deleted ?? false,
  }));
  return { results, revision: revisionOf(response.header), usage: decodeUsage(response.usage) };
}
