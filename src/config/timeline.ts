/**
 * Timelines: the versions of one configuration ordered by activation instant, and the immutable
 * snapshots a batch asks per entry.
 */
import { MusterError } from '../errors.js';
import type { ConfigVersion } from './model.js';

/**
 * An immutable list of versions, ordered by `activateAt` (ties: the higher version wins, since it was
 * published later). `at(t)` is a binary search.
 */
export class Timeline<T = unknown> {
  readonly versions: readonly ConfigVersion<T>[];

  constructor(versions: Iterable<ConfigVersion<T>>) {
    this.versions = Object.freeze(
      [...versions].sort((a, b) => a.activateAt - b.activateAt || a.version - b.version),
    );
  }

  /** The version with the greatest `activateAt ≤ t`, or `undefined` when none is in force. */
  at(t: number): ConfigVersion<T> | undefined {
    const vs = this.versions;
    let lo = 0;
    let hi = vs.length; // first index with activateAt > t
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((vs[mid] as ConfigVersion<T>).activateAt <= t) lo = mid + 1;
      else hi = mid;
    }
    return lo === 0 ? undefined : vs[lo - 1];
  }

  /** Versions that activate strictly after `t`, in activation order. */
  after(t: number): readonly ConfigVersion<T>[] {
    return this.versions.filter((v) => v.activateAt > t);
  }

  /** The first activation instant strictly after `t`, or `undefined`. */
  nextActivation(t: number): number | undefined {
    return this.versions.find((v) => v.activateAt > t)?.activateAt;
  }
}

/**
 * What a configuration handle knew at one moment: its timeline and the latest instant up to which the
 * timeline is proven complete (`horizon`). Fetch once per batch, then ask `at(entry time)` per entry:
 * every entry gets the version in force at its own time, even when the batch straddles an activation.
 */
export class ConfigSnapshot<T = unknown> {
  readonly name: string;
  readonly timeline: Timeline<T>;
  /**
   * Wall-clock instant up to which this snapshot holds every version that can be in force: the
   * verification instant plus `maxStaleness` (any version missing from it activates later than that).
   */
  readonly horizon: number;
  /** Store revision the timeline reflects. */
  readonly revision: number;

  constructor(name: string, timeline: Timeline<T>, horizon: number, revision: number) {
    this.name = name;
    this.timeline = timeline;
    this.horizon = horizon;
    this.revision = revision;
  }

  /**
   * The version in force at `t`. Throws `MUSTER_STALE_CONFIG` when `t` is beyond {@link horizon}
   * (the snapshot cannot vouch for it) and `MUSTER_MISSING_CONFIG` when no version is in force.
   */
  at(t: number): ConfigVersion<T> {
    if (t > this.horizon) {
      throw new MusterError(
        'MUSTER_STALE_CONFIG',
        `snapshot of configuration '${this.name}' is complete only up to ${new Date(this.horizon).toISOString()}; ` +
          `take a new snapshot for ${new Date(t).toISOString()}`,
        { details: { config: this.name, horizon: this.horizon, at: t } },
      );
    }
    const v = this.timeline.at(t);
    if (v === undefined) throw missingConfig(this.name, t);
    return v;
  }
}

/** The `MUSTER_MISSING_CONFIG` error for `name` at `t`. */
export function missingConfig(name: string, t: number): MusterError {
  return new MusterError(
    'MUSTER_MISSING_CONFIG',
    `configuration '${name}' has no version in force at ${new Date(t).toISOString()}; publish one with ` +
      `'muster config set ${name} --file value.json --in 5s'`,
    { details: { config: name, at: t } },
  );
}
