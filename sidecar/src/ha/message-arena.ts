/**
 * Where the state cache keeps the bytes of its REGISTERs: appended to large
 * chunks, each message known by a small integer id (chunk, offset, length,
 * link and a count of the bindings that use it, in typed arrays). One Buffer
 * of its own per cached REGISTER cost about 1.1 KB for a 420-byte message
 * (the Buffer and ArrayBuffer objects, the native backing store, the entry
 * object around it) and, with the heap grown to match, 170 MiB of RSS at
 * 100,000 registrations; here a message costs its bytes and 20 bytes of
 * bookkeeping.
 *
 * Chunks are only appended to: a freed message leaves a hole, a chunk with no
 * live message goes, and when the chunks hold more than twice the live bytes
 * (plus a few chunks of slack) the live messages are copied into fresh ones.
 * A view handed out (`view`) therefore never changes under its holder; it
 * keeps its old chunk alive for as long as it is held.
 */

const CHUNK = 1 << 20;
/** Compaction waits until this much is wasted, whatever the ratio (a small cache never compacts). */
const SLACK = 8 * CHUNK;

export class MessageArena {
  private chunks: Array<Buffer | null> = [];
  /** Live bytes per chunk. */
  private chunkLive: number[] = [];
  /** The chunk being appended to (-1: none yet) and where its free space starts. */
  private current = -1;
  private at = 0;
  /** Bytes in all chunks, and in live messages. */
  private allocated = 0;
  private live = 0;
  // Per message id:
  private chunkOf = new Int32Array(1024);
  private offsetOf = new Int32Array(1024);
  private lengthOf = new Int32Array(1024);
  private linkOf = new Int32Array(1024);
  private refsOf = new Int32Array(1024);
  /** A number no other message had (ids are reused; a burst tells messages apart by this). */
  private serialOf = new Float64Array(1024);
  private serials = 0;
  private readonly freeIds: number[] = [];
  private nextId = 0;
  /** Times the live messages were copied into fresh chunks. */
  compactions = 0;

  /** Copies `bytes` in; the message has one reference (the caller's). */
  add(bytes: Buffer, link: number): number {
    const id = this.freeIds.pop() ?? this.newId();
    const n = bytes.length;
    const [chunk, offset] = this.place(n);
    bytes.copy(this.chunks[chunk] as Buffer, offset);
    this.chunkOf[id] = chunk;
    this.offsetOf[id] = offset;
    this.lengthOf[id] = n;
    this.linkOf[id] = link;
    this.refsOf[id] = 1;
    this.serialOf[id] = ++this.serials;
    this.live += n;
    return id;
  }

  /** One more binding uses message `id`. */
  ref(id: number): void {
    this.refsOf[id] = (this.refsOf[id] as number) + 1;
  }

  /** One binding fewer uses message `id`; the last one frees it. */
  release(id: number): void {
    const refs = (this.refsOf[id] as number) - 1;
    this.refsOf[id] = refs;
    if (refs > 0) return;
    const chunk = this.chunkOf[id] as number;
    const n = this.lengthOf[id] as number;
    this.live -= n;
    const left = (this.chunkLive[chunk] as number) - n;
    this.chunkLive[chunk] = left;
    if (left === 0 && chunk !== this.current) this.dropChunk(chunk);
    this.freeIds.push(id);
    if (this.allocated > 2 * this.live + SLACK) this.compact();
  }

  /** The message's bytes: a view into its chunk (valid for as long as it is held). */
  view(id: number): Buffer {
    const off = this.offsetOf[id] as number;
    return (this.chunks[this.chunkOf[id] as number] as Buffer).subarray(off, off + (this.lengthOf[id] as number));
  }

  /** The first `max` bytes of the message as latin1 text (no view object). */
  head(id: number, max: number): string {
    const off = this.offsetOf[id] as number;
    const n = Math.min(this.lengthOf[id] as number, max);
    return (this.chunks[this.chunkOf[id] as number] as Buffer).toString('latin1', off, off + n);
  }

  link(id: number): number {
    return this.linkOf[id] as number;
  }

  serial(id: number): number {
    return this.serialOf[id] as number;
  }

  /** Bytes held in chunks, and in live messages. */
  get bytes(): { allocated: number; live: number } {
    return { allocated: this.allocated, live: this.live };
  }

  private newId(): number {
    const id = this.nextId++;
    if (id >= this.chunkOf.length) {
      const grow = <T extends Int32Array | Float64Array>(a: T): T => {
        const b = new (a.constructor as new (n: number) => T)(a.length * 2);
        b.set(a);
        return b;
      };
      this.chunkOf = grow(this.chunkOf);
      this.offsetOf = grow(this.offsetOf);
      this.lengthOf = grow(this.lengthOf);
      this.linkOf = grow(this.linkOf);
      this.refsOf = grow(this.refsOf);
      this.serialOf = grow(this.serialOf);
    }
    return id;
  }

  /** Room for `n` bytes: [chunk, offset]. */
  private place(n: number): [number, number] {
    if (this.current < 0 || this.at + n > (this.chunks[this.current] as Buffer).length) {
      const old = this.current;
      // Not from Node's shared pool: a chunk lives long, and must not pin a slab of passing traffic.
      this.current = this.newChunk(Math.max(CHUNK, n));
      this.at = 0;
      if (old >= 0 && this.chunkLive[old] === 0) this.dropChunk(old);
    }
    const offset = this.at;
    this.at += n;
    this.chunkLive[this.current] = (this.chunkLive[this.current] as number) + n;
    return [this.current, offset];
  }

  private newChunk(size: number): number {
    let i = this.chunks.indexOf(null);
    if (i < 0) i = this.chunks.length;
    this.chunks[i] = Buffer.allocUnsafeSlow(size);
    this.chunkLive[i] = 0;
    this.allocated += size;
    return i;
  }

  private dropChunk(i: number): void {
    this.allocated -= (this.chunks[i] as Buffer).length;
    this.chunks[i] = null;
  }

  /** Copies every live message into fresh chunks, in id order; the old chunks go (views keep theirs). */
  private compact(): void {
    const old = this.chunks;
    this.chunks = [];
    this.chunkLive = [];
    this.current = -1;
    this.at = 0;
    this.allocated = 0;
    for (let id = 0; id < this.nextId; id++) {
      if ((this.refsOf[id] as number) <= 0) continue;
      const src = old[this.chunkOf[id] as number] as Buffer;
      const off = this.offsetOf[id] as number;
      const n = this.lengthOf[id] as number;
      const [chunk, offset] = this.place(n);
      src.copy(this.chunks[chunk] as Buffer, offset, off, off + n);
      this.chunkOf[id] = chunk;
      this.offsetOf[id] = offset;
    }
    this.compactions++;
  }
}
