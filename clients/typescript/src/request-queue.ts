// RequestQueue: the bounded buffer between `send()` and the transport. The transport pulls the
// next message only after HTTP/2 flow control accepted the previous one, so when the server or
// the network is slower than the sender, the queue fills and `push` waits for room instead of
// buffering without bound.

interface Waiter<T> {
  item: T;
  bytes: number;
  resolve: () => void;
  reject: (reason: Error) => void;
}

export class RequestQueue<T> implements AsyncIterable<T> {
  readonly capacity: number;
  #items: { item: T; bytes: number }[] = [];
  #bytes = 0;
  #waiters: Waiter<T>[] = [];
  #puller: ((r: IteratorResult<T>) => void) | undefined;
  #ended = false;
  #failure: { reason: Error } | undefined;

  constructor(capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1) {
      throw new RangeError(`the queue capacity must be an integer >= 1, got ${capacity}`);
    }
    this.capacity = capacity;
  }

  /** Messages queued and not yet taken by the transport. */
  get length(): number {
    return this.#items.length;
  }

  /** Payload bytes of the queued messages. */
  get bytes(): number {
    return this.#bytes;
  }

  /** Pushes waiting for room. */
  get waiting(): number {
    return this.#waiters.length;
  }

  /** Queues `item`, waiting while the queue is full; rejects once the queue failed. */
  push(item: T, bytes = 0): Promise<void> {
    if (this.#failure !== undefined) return Promise.reject(this.#failure.reason);
    if (this.#ended) return Promise.reject(new TypeError("the request stream is already closed"));
    if (this.#waiters.length === 0 && this.#items.length < this.capacity) {
      this.#enqueue(item, bytes);
      return Promise.resolve();
    }
    return new Promise((resolve, reject) => this.#waiters.push({ item, bytes, resolve, reject }));
  }

  /** Queues `item` even when full (for control messages that must not wait behind data). */
  pushNow(item: T): void {
    if (this.#failure !== undefined || this.#ended) return;
    this.#enqueue(item, 0);
  }

  /** No more items after those queued or waiting; the iterator ends once they are taken. */
  end(): void {
    this.#ended = true;
    this.#settlePuller();
  }

  /** Drops everything, rejects waiting pushes with `reason` and ends the iterator. */
  fail(reason: Error): void {
    if (this.#failure !== undefined) return;
    this.#failure = { reason };
    this.#items = [];
    this.#bytes = 0;
    for (const w of this.#waiters.splice(0)) w.reject(reason);
    this.#settlePuller();
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    return {
      next: () => {
        const taken = this.#take();
        if (taken !== undefined) return Promise.resolve(taken);
        return new Promise((resolve) => {
          this.#puller = resolve;
        });
      },
      return: () => {
        this.fail(new TypeError("the request stream was abandoned by the transport"));
        return Promise.resolve({ done: true, value: undefined });
      },
      throw: (reason: unknown) => {
        this.fail(reason instanceof Error ? reason : new TypeError("the request stream failed", { cause: reason }));
        return Promise.resolve({ done: true, value: undefined });
      },
    };
  }

  #enqueue(item: T, bytes: number): void {
    this.#items.push({ item, bytes });
    this.#bytes += bytes;
    this.#settlePuller();
  }

  #take(): IteratorResult<T> | undefined {
    const head = this.#items.shift();
    if (head !== undefined) {
      this.#bytes -= head.bytes;
      this.#admitWaiters();
      return { done: false, value: head.item };
    }
    if (this.#failure !== undefined || (this.#ended && this.#waiters.length === 0)) {
      return { done: true, value: undefined };
    }
    return undefined;
  }

  #admitWaiters(): void {
    while (this.#items.length < this.capacity) {
      const w = this.#waiters.shift();
      if (w === undefined) return;
      this.#items.push({ item: w.item, bytes: w.bytes });
      this.#bytes += w.bytes;
      w.resolve();
    }
  }

  #settlePuller(): void {
    const puller = this.#puller;
    if (puller === undefined) return;
    const taken = this.#take();
    if (taken === undefined) return;
    this.#puller = undefined;
    puller(taken);
  }
}
