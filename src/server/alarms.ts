/**
 * etcd's alarms, recorded durably in the data directory (`alarms.json`), and the space quota that
 * raises `NOSPACE` as etcd's `--quota-backend-bytes` does.
 *
 * While `NOSPACE` is raised the server refuses what makes the data grow — puts, transactions that
 * put, lease grants — with etcd's "database space exceeded", and serves reads, deletes and
 * compactions, so an operator can free space and then disarm the alarm (`etcdctl alarm disarm`).
 * The alarm file is replaced whole (temporary file, fsync, rename, directory fsync): a crash leaves
 * the old or the new list, never a torn one.
 */
import { closeSync, fsyncSync, openSync } from 'node:fs';
import { readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { MusterError } from '../errors.js';
import { crashPoint } from './crash-point.js';
import { syncDir } from './wal.js';

/** etcd's `AlarmType`. */
export const ALARM_NONE = 0;
export const ALARM_NOSPACE = 1;
export const ALARM_CORRUPT = 2;
const ALARM_TYPES = new Set([ALARM_NOSPACE, ALARM_CORRUPT]);

export const ALARMS_FILE = 'alarms.json';

export interface AlarmMember {
  readonly memberID: string;
  readonly alarm: number;
}

/** The raised alarms of one data directory. */
export class Alarms {
  readonly #dir: string;
  #list: AlarmMember[];
  /** The one check on the write path. */
  #noSpace: boolean;
  #writing: Promise<void> = Promise.resolve();

  private constructor(dir: string, list: AlarmMember[]) {
    this.#dir = dir;
    this.#list = list;
    this.#noSpace = list.some((a) => a.alarm === ALARM_NOSPACE);
  }

  /** Reads `alarms.json` (none when missing). Throws `MUSTER_CORRUPT_DATA` when it cannot be parsed. */
  static async load(dir: string): Promise<Alarms> {
    const file = join(dir, ALARMS_FILE);
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return new Alarms(dir, []);
      throw err;
    }
    try {
      const parsed = JSON.parse(text) as { alarms: AlarmMember[] };
      const list = parsed.alarms
        .filter((a) => ALARM_TYPES.has(a.alarm))
        .map((a) => ({ memberID: String(a.memberID), alarm: a.alarm }));
      return new Alarms(dir, list);
    } catch (err) {
      throw new MusterError(
        'MUSTER_CORRUPT_DATA',
        `${file} cannot be parsed; remove it to clear the alarms`,
        {
          cause: err,
          details: { file },
        },
      );
    }
  }

  /** True while a `NOSPACE` alarm is raised. */
  get noSpace(): boolean {
    return this.#noSpace;
  }

  /** The raised alarms, optionally of one type (`ALARM_NONE`: all). */
  list(alarm = ALARM_NONE): AlarmMember[] {
    return this.#list.filter((a) => alarm === ALARM_NONE || a.alarm === alarm);
  }

  /** Raises an alarm (durably); returns it. Raising a raised alarm changes nothing. */
  async activate(memberID: string, alarm: number): Promise<AlarmMember[]> {
    if (!ALARM_TYPES.has(alarm)) return [];
    const a = { memberID, alarm };
    if (!this.#list.some((x) => x.memberID === memberID && x.alarm === alarm)) {
      this.#list = [...this.#list, a];
      await this.#save();
    }
    return [a];
  }

  /** Disarms an alarm (durably); returns it, or nothing when it was not raised. */
  async deactivate(memberID: string, alarm: number): Promise<AlarmMember[]> {
    const found = this.#list.filter((x) => x.memberID === memberID && x.alarm === alarm);
    if (found.length === 0) return [];
    this.#list = this.#list.filter((x) => !(x.memberID === memberID && x.alarm === alarm));
    await this.#save();
    return found;
  }

  /** Writes the list; writes are serialised so the file always ends with the newest list. */
  #save(): Promise<void> {
    this.#noSpace = this.#list.some((a) => a.alarm === ALARM_NOSPACE);
    const text = `${JSON.stringify({ alarms: this.#list })}\n`;
    this.#writing = this.#writing
      .catch(() => undefined)
      .then(async () => {
        const file = join(this.#dir, ALARMS_FILE);
        const tmp = `${file}.tmp`;
        await writeFile(tmp, text);
        const fd = openSync(tmp, 'r+');
        try {
          fsyncSync(fd);
        } finally {
          closeSync(fd);
        }
        crashPoint('alarms.tmp-synced');
        await rename(tmp, file);
        crashPoint('alarms.renamed');
        syncDir(this.#dir);
      });
    return this.#writing;
  }
}
