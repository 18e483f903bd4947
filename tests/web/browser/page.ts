// The browser test page (bundled by esbuild, served on 127.0.0.1 by browser.test.ts): the
// web client in a real page, driven from the test through `window.tmcpPage`.

import { OfflineStore, StorageClient, StorageError, type JsonValue, type Space } from "../../../clients/web/src/index.js";

let client: StorageClient | undefined;
let store: OfflineStore | undefined;
const stop = new AbortController();
const watched: { key: string; op: string; value: unknown }[] = [];

function log(line: string): void {
  const out = document.getElementById("log");
  if (out !== null) out.textContent += `${line}\n`;
}

function kv(): StorageClient {
  if (client === undefined) throw new Error("call init first");
  return client;
}

function local(): OfflineStore {
  if (store === undefined) throw new Error("call openStore first");
  return store;
}

const api = {
  init(baseUrl: string, token: string, space: Space): void {
    client = new StorageClient({ baseUrl, token, space, retries: 1, timeout: 30 });
    log(`client for ${space.appId}/${space.userId} at ${baseUrl}`);
  },

  async putGet(key: string, value: JsonValue): Promise<{ value: unknown; version: number }> {
    await kv().put(key, value);
    const entry = await kv().get(key);
    log(`put and got ${key}`);
    return { value: entry.value, version: entry.version };
  },

  async error(key: string, space?: Space): Promise<{ name: string; code: string; reason: string } | undefined> {
    try {
      await kv().get(key, space === undefined ? {} : { space });
      return undefined;
    } catch (error) {
      if (!(error instanceof StorageError)) throw error;
      log(`error ${error.name} ${error.reason}`);
      return { name: error.name, code: error.codeName, reason: error.reason };
    }
  },

  async startWatch(prefix: string): Promise<void> {
    const { cursor } = await kv().status();
    void (async () => {
      for await (const event of kv().watch(cursor, { prefix, signal: stop.signal })) {
        for (const c of event.changes) watched.push({ key: c.key, op: c.op, value: c.entry?.value });
      }
    })();
  },

  watched(): { key: string; op: string; value: unknown }[] {
    return watched;
  },

  async openStore(clientId: string): Promise<void> {
    store = await OfflineStore.open({ client: kv(), clientId, name: `page-${clientId}` });
    void store.run(stop.signal, { retryDelay: 0.2, maxDelay: 1 });
  },

  async storePut(key: string, value: JsonValue): Promise<void> {
    await local().put(key, value);
  },

  async storeGet(key: string): Promise<unknown> {
    return local().get(key);
  },

  async pending(): Promise<number> {
    return local().pending();
  },

  online(): boolean {
    return navigator.onLine;
  },
};

declare global {
  interface Window {
    tmcpPage: typeof api;
  }
}

window.tmcpPage = api;
log("ready");
