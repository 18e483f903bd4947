/**
 * The little of IndexedDB the offline store needs, as promises.
 *
 * A transaction commits by itself once no request is pending at the end of a task, so a
 * body passed to `transact` may await only requests of its own transaction (never the
 * network): the offline store reads, calls the server, then writes in a new transaction.
 */

/** Open (creating or upgrading) a database. */
export function openDatabase(
  factory: IDBFactory,
  name: string,
  version: number,
  upgrade: (db: IDBDatabase, oldVersion: number) => void,
): Promise<IDBDatabase> {
  return new Promise((resolve, reject) => {
    const opening = factory.open(name, version);
    opening.onupgradeneeded = (event) => upgrade(opening.result, event.oldVersion);
    opening.onsuccess = () => resolve(opening.result);
    opening.onerror = () => reject(opening.error ?? new Error(`cannot open IndexedDB ${name}`));
    opening.onblocked = () => reject(new Error(`IndexedDB ${name} is open elsewhere with an older version`));
  });
}

/** The result of one request. */
export function request<T>(req: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error ?? new Error("IndexedDB request failed"));
  });
}

/**
 * Run `body` in one transaction and resolve once it committed; a throw in `body` aborts
 * it, so that nothing of it is kept.
 */
export async function transact<T>(
  db: IDBDatabase,
  stores: readonly string[],
  mode: IDBTransactionMode,
  body: (tx: IDBTransaction) => Promise<T>,
): Promise<T> {
  const tx = db.transaction([...stores], mode);
  const done = new Promise<void>((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onabort = () => reject(tx.error ?? new Error("IndexedDB transaction aborted"));
    tx.onerror = () => reject(tx.error ?? new Error("IndexedDB transaction failed"));
  });
  let result: T;
  try {
    result = await body(tx);
  } catch (error) {
    try {
      tx.abort();
    } catch {
      // Already finished: the error below is the one that matters.
    }
    done.catch(() => undefined);
    throw error;
  }
  await done;
  return result;
}
