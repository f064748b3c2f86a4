// The durable record of a large message's draft at Graph, written before anything is uploaded
// to it: after a crash the next attempt finds the draft and either sends that same draft again
// (it was about to be sent: Graph answers 404 once it was, and that counts as sent) or deletes
// it and starts over. Never a second draft sent for one queued message.
// One small file per message under stateDir/graph-drafts, replaced with the project's one
// durable write (src/fs/safeWrite.ts); removed once the message is sent or given up.
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { safeWrite, unlinkQuiet } from '../../fs/safeWrite.js';

export interface DraftRecord {
  draftId: string;
  mailbox: string;
  /** uploading: attachments may be missing; sending: POST /send was (maybe) issued. */
  phase: 'uploading' | 'sending';
}

const ID = /^[A-Za-z0-9_-]+$/;

export class DraftJournal {
  private readonly dir: string;

  constructor(stateDir: string) {
    this.dir = join(stateDir, 'graph-drafts');
  }

  private path(messageId: string): string {
    if (!ID.test(messageId)) throw new Error(`invalid queue id ${JSON.stringify(messageId)}`);
    return join(this.dir, `${messageId}.json`);
  }

  async get(messageId: string): Promise<DraftRecord | null> {
    try {
      const r = JSON.parse(await readFile(this.path(messageId), 'utf8')) as DraftRecord;
      return typeof r.draftId === 'string' && (r.phase === 'uploading' || r.phase === 'sending') ? r : null;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw e;
    }
  }

  async put(messageId: string, rec: DraftRecord): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    await safeWrite(this.path(messageId), JSON.stringify(rec));
  }

  async remove(messageId: string): Promise<void> {
    await unlinkQuiet(this.path(messageId));
  }
}
