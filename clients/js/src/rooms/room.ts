// One room as one tab sees it: messages, members, typing users, receipts and
// the last error, built from the room frames the leader fans out to every tab
// (its own included). Listeners are per aspect, so a typing change does not
// re-render a message list.
// Invariant: every getter returns the same object until that aspect changes,
// and its listeners are called once per change; a typing entry expires by
// this tab's own timer, 5 s after the user's last typing frame.

import { reportHandlerError } from '../delivery.js';
import { TimerGroup, type Env, type TimerHandle } from '../env.js';
import type { ChatMessage, PresenceState, RoomError, RoomMessage } from '../types.js';
import { MessageLog } from './messages.js';
import { Members } from './presence.js';
import { Receipts } from './receipts.js';
import { TypingTracker } from './typing.js';
import type { RoomFrame } from './wire.js';

export type Aspect = 'messages' | 'typing' | 'presence' | 'receipts';

export class RoomCore {
  readonly log = new MessageLog();
  private readonly members = new Members();
  private readonly receipts = new Receipts();
  private readonly typing = new TypingTracker();
  private readonly timers: TimerGroup;
  private typingTimer: TimerHandle | null = null;
  private readonly listeners = new Map<Aspect, Set<() => void>>();
  private readonly errorListeners = new Set<(e: RoomError) => void>();
  private isJoined = false;
  private error: RoomError | null = null;
  private disposed = false;

  constructor(
    readonly id: string,
    private readonly env: Pick<Env, 'now' | 'setTimeout' | 'clearTimeout'>,
  ) {
    this.timers = new TimerGroup(env);
  }

  // ---- frames ------------------------------------------------------------

  /** A room frame of this room. `asked`: the history size the join asked for (joined only). */
  apply(frame: RoomFrame, asked: number): void {
    if (this.disposed) return;
    switch (frame.type) {
      case 'joined': {
        const wasJoined = this.isJoined;
        this.isJoined = true;
        this.error = null;
        if (this.log.joined(frame.history, asked)) this.emit('messages');
        const presence = this.members.snapshot(frame.members);
        if (presence || !wasJoined) this.emit('presence');
        if (this.receipts.merge(frame.receipts)) this.emit('receipts');
        return;
      }
      case 'left':
        this.disconnected();
        return;
      case 'message': {
        const { type: _type, ...m } = frame;
        if (this.log.add([m])) this.emit('messages');
        return;
      }
      case 'typing':
        if (this.typing.saw(frame.userId, this.env.now())) this.emit('typing');
        this.armTyping();
        return;
      case 'receipt':
        if (this.receipts.set(frame.userId, frame.seq)) this.emit('receipts');
        return;
      case 'presence':
        if (this.members.set(frame.userId, frame.state)) this.emit('presence');
        // Someone who left is not typing any more.
        if (frame.state === 'offline' && this.typing.remove(frame.userId)) this.emit('typing');
        return;
      case 'error':
        this.fault({ code: frame.code, message: frame.message });
        return;
    }
  }

  /** The leader's connection dropped or the room was left: not joined until the next `joined`. */
  disconnected(): void {
    if (this.disposed || !this.isJoined) return;
    this.isJoined = false;
    if (this.typing.clear()) this.emit('typing');
    this.emit('presence');
  }

  /** A room-level error (refused join, typing or read). */
  fault(error: RoomError): void {
    if (this.disposed) return;
    this.error = error;
    for (const cb of [...this.errorListeners]) {
      try {
        cb(error);
      } catch (err) {
        reportHandlerError(err);
      }
    }
  }

  // ---- own messages --------------------------------------------------------

  addPending(m: ChatMessage): void {
    this.log.addPending(m);
    this.emit('messages');
  }

  failPending(clientMsgId: string, error: RoomError): void {
    if (this.log.fail(clientMsgId, error)) this.emit('messages');
  }

  /** An HTTP page of older messages. */
  page(messages: RoomMessage[], before: number | undefined, limit: number): void {
    if (this.log.page(messages, before, limit)) this.emit('messages');
  }

  // ---- getters --------------------------------------------------------------

  messages(): readonly ChatMessage[] {
    return this.log.list();
  }

  memberStates(): Readonly<Record<string, PresenceState>> {
    return this.members.get();
  }

  typingUsers(): readonly string[] {
    return this.typing.users();
  }

  receiptSeqs(): Readonly<Record<string, number>> {
    return this.receipts.get();
  }

  receiptOf(userId: string): number | null {
    return this.receipts.of(userId);
  }

  joined(): boolean {
    return this.isJoined;
  }

  lastError(): RoomError | null {
    return this.error;
  }

  // ---- listeners -------------------------------------------------------------

  on(aspect: Aspect, cb: () => void): () => void {
    let set = this.listeners.get(aspect);
    if (set === undefined) {
      set = new Set();
      this.listeners.set(aspect, set);
    }
    const s = set;
    const entry = () => cb();
    s.add(entry);
    return () => {
      s.delete(entry);
    };
  }

  onError(cb: (e: RoomError) => void): () => void {
    const entry = (e: RoomError) => cb(e);
    this.errorListeners.add(entry);
    return () => {
      this.errorListeners.delete(entry);
    };
  }

  private emit(aspect: Aspect): void {
    for (const cb of [...(this.listeners.get(aspect) ?? [])]) {
      try {
        cb();
      } catch (err) {
        reportHandlerError(err);
      }
    }
  }

  /** One timer, at the next expiry of a typing entry. */
  private armTyping(): void {
    this.timers.clear(this.typingTimer);
    this.typingTimer = null;
    const at = this.typing.nextExpiry();
    if (at === null || this.disposed) return;
    this.typingTimer = this.timers.set(() => {
      this.typingTimer = null;
      if (this.typing.expire(this.env.now())) this.emit('typing');
      this.armTyping();
    }, at - this.env.now());
  }

  /** Stops timers; frames and calls are ignored from now on. */
  dispose(): void {
    this.disposed = true;
    this.timers.clearAll();
    this.listeners.clear();
    this.errorListeners.clear();
  }
}
