// ReadAhead: an async iterator read ahead of its consumer, up to a bound.
//
// Node's HTTP/2 client drops what a stream has received but not yet been read when the stream
// closes: a server that ends a stream (its status in the trailers), then resets the request
// side with NO_ERROR, as HTTP/2 lets it (RFC 9113, section 8.1), leaves the application that
// was not iterating at that moment with "Premature close" instead of the server's results and
// status. Reading the responses as they arrive keeps them, and the bound keeps backpressure: an
// application that stops reading stops the reads after `limit` messages, and then the server.

type Item<T> = IteratorResult<T> | { error: unknown };

export class ReadAhead<T> implements AsyncIterator<T> {
  readonly #source: AsyncIterator<T>;
  readonly #limit: number;
  /** Read and not yet taken; a last item that ends the source stays for every later `next()`. */
  readonly #items: Item<T>[] = [];
  /** `next()` calls waiting for an item (concurrent calls are answered in order). */
  readonly #consumersWaiting: (() => void)[] = [];
  #pumpWaiting: (() => void) | undefined;

  /** Starts reading `source`, at most `limit` (at least 1) items ahead of `next()`. */
  constructor(source: AsyncIterator<T>, limit: number) {
    this.#source = source;
    this.#limit = Math.max(1, limit);
    void this.#pump();
  }

  async #pump(): Promise<void> {
    for (;;) {
      while (this.#items.length >= this.#limit) {
        await new Promise<void>((resolve) => {
          this.#pumpWaiting = resolve;
        });
      }
      let item: Item<T>;
      try {
        item = await this.#source.next();
      } catch (error) {
        item = { error };
      }
      this.#items.push(item);
      for (const wake of this.#consumersWaiting.splice(0)) wake();
      if ("error" in item || item.done === true) return;
    }
  }

  async next(): Promise<IteratorResult<T>> {
    while (this.#items.length === 0) {
      await new Promise<void>((resolve) => {
        this.#consumersWaiting.push(resolve);
      });
    }
    const item = this.#items[0] as Item<T>;
    if ("error" in item) throw item.error;
    if (item.done === true) return item;
    this.#items.shift();
    this.#pumpWaiting?.();
    this.#pumpWaiting = undefined;
    return item;
  }
}
