/**
 * How calls travel: the gRPC-Web transport with the bearer token, and the one place where
 * a unary call gets its deadline, its retries of UNAVAILABLE and its typed errors.
 *
 * Only UNAVAILABLE is retried: the server answers it when the call took no effect (and a
 * fetch that never reached the server took none), so another attempt is safe even for a
 * write. Waits grow exponentially with jitter, are at least what the server asked for in
 * RetryInfo, and never run past the call's deadline.
 */

import { type CallOptions, type Client, type Interceptor, createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { Unavailable, fromError } from "./errors.js";
import { Batch } from "./gen/tmcp/storage/v1/batch_pb.js";
import { KeyValue } from "./gen/tmcp/storage/v1/kv_pb.js";
import { Quota } from "./gen/tmcp/storage/v1/quota_pb.js";
import { Sync } from "./gen/tmcp/storage/v1/sync_pb.js";

/** A bearer token, or a function giving one for each attempt (so that it may refresh). */
export type TokenSource = string | (() => string | Promise<string>);

/** The generated clients of the four services, over one transport. */
export interface Services {
  readonly kv: Client<typeof KeyValue>;
  readonly batch: Client<typeof Batch>;
  readonly quota: Client<typeof Quota>;
  readonly sync: Client<typeof Sync>;
}

/** The services at a gRPC-Web endpoint, every request carrying the token. */
export function connectServices(baseUrl: string, token: TokenSource | undefined, fetch?: typeof globalThis.fetch): Services {
  const transport = createGrpcWebTransport({
    baseUrl,
    useBinaryFormat: true,
    interceptors: [authInterceptor(token)],
    ...(fetch === undefined ? {} : { fetch }),
  });
  return {
    kv: createClient(KeyValue, transport),
    batch: createClient(Batch, transport),
    quota: createClient(Quota, transport),
    sync: createClient(Sync, transport),
  };
}

function authInterceptor(token: TokenSource | undefined): Interceptor {
  return (next) => async (request) => {
    if (token !== undefined) {
      const value = typeof token === "string" ? token : await token();
      request.header.set("authorization", `Bearer ${value}`);
    }
    return next(request);
  };
}

/** The deadline and cancellation of one call. */
export interface Limits {
  /** Seconds for the whole call, retries included; 0 for none. */
  readonly timeout: number;
  readonly signal?: AbortSignal | undefined;
}

/** One unary call: the deadline over all attempts, retries on UNAVAILABLE, typed errors. */
export async function unary<T>(limits: Limits, retries: number, attempt: (options: CallOptions) => Promise<T>): Promise<T> {
  const deadline = limits.timeout > 0 ? Date.now() + limits.timeout * 1000 : undefined;
  for (let retry = 0; ; retry++) {
    const left = deadline === undefined ? undefined : Math.max(deadline - Date.now(), 1);
    try {
      return await attempt({ timeoutMs: left, signal: limits.signal });
    } catch (error) {
      const failure = fromError(error);
      if (!(failure instanceof Unavailable) || retry >= retries || limits.signal?.aborted) throw failure;
      // Jitter keeps clients that failed together from retrying together.
      const backoff = Math.min(2, 0.05 * 2 ** retry) * (0.5 + Math.random() / 2);
      const delay = Math.max(backoff, failure.retryDelay ?? 0) * 1000;
      if (deadline !== undefined && Date.now() + delay >= deadline) throw failure;
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }
}
