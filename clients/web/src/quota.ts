/** Requests and results of the Quota service. */

import { decodeUsage, int64, num, revisionOf } from "./codec.js";
import type {
  GetAppUsageResponse,
  GetQuotaResponse,
  GetUsageResponse,
  QuotaLimits as LimitsMessage,
} from "./gen/tmcp/storage/v1/quota_pb.js";
import type { AppUsage, QuotaInfo, QuotaLimits, UsageInfo } from "./models.js";

/** The wire form of limit overrides (undefined fields stay unset). */
export function encodeLimits(limits: QuotaLimits): { limitBytes?: bigint; limitKeys?: bigint; maxValueBytes?: bigint } {
  const out: { limitBytes?: bigint; limitKeys?: bigint; maxValueBytes?: bigint } = {};
  if (limits.limitBytes !== undefined) out.limitBytes = int64(limits.limitBytes, "limitBytes");
  if (limits.limitKeys !== undefined) out.limitKeys = int64(limits.limitKeys, "limitKeys");
  if (limits.maxValueBytes !== undefined) out.maxValueBytes = int64(limits.maxValueBytes, "maxValueBytes");
  return out;
}

/** Limit overrides from the wire. */
export function decodeLimits(message: LimitsMessage | undefined): QuotaLimits {
  const optional = (value: bigint | undefined) => (value === undefined ? undefined : num(value));
  return {
    limitBytes: optional(message?.limitBytes),
    limitKeys: optional(message?.limitKeys),
    maxValueBytes: optional(message?.maxValueBytes),
  };
}

/** A space's limits, usage and headroom. */
export function decodeQuotaInfo(response: GetQuotaResponse): QuotaInfo {
  const usage = decodeUsage(response.usage);
  if (usage === undefined) throw new TypeError("missing usage");
  return {
    ...usage,
    availableBytes: num(response.availableBytes),
    availableKeys: num(response.availableKeys),
    revision: revisionOf(response.header),
  };
}

/** A space's detailed usage. */
export function decodeUsageInfo(r: GetUsageResponse): UsageInfo {
  return {
    usage: decodeUsage(r.usage),
    byContentType: r.byContentType.map((c) => ({ contentType: c.contentType, bytes: num(c.bytes), keys: num(c.keys) })),
    expiringKeys: num(r.expiringKeys),
    expiringBytes: num(r.expiringBytes),
    openConflicts: num(r.openConflicts),
    largestKeys: r.largestKeys.map((k) => ({ key: k.key, size: num(k.size) })),
    revision: revisionOf(r.header),
  };
}

/** Totals over every space of an app. */
export function decodeAppUsage(r: GetAppUsageResponse): AppUsage {
  return {
    appId: r.appId,
    spaces: num(r.spaces),
    usedBytes: num(r.usedBytes),
    usedKeys: num(r.usedKeys),
    overrides: decodeLimits(r.overrides),
    largestSpaces: r.largestSpaces.map((s) => ({
      space: { appId: s.space?.appId ?? "", userId: s.space?.userId ?? "" },
      usage: decodeUsage(s.usage),
    })),
  };
}
