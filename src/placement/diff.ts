/**
 * Comparing two assignments: what moved, what appeared, what disappeared.
 */
import type { AssignmentDiff } from './types.js';

/**
 * The difference between two partition → instance maps. Entries come out in the iteration order of
 * `after` (moved, added), then of `before` (removed). Pure; never throws.
 */
export function diffAssignments(
  before: ReadonlyMap<string, string>,
  after: ReadonlyMap<string, string>,
): AssignmentDiff {
  const moved: { partition: string; from: string; to: string }[] = [];
  const added: { partition: string; to: string }[] = [];
  const removed: { partition: string; from: string }[] = [];
  for (const [partition, to] of after) {
    const from = before.get(partition);
    if (from === undefined) added.push({ partition, to });
    else if (from !== to) moved.push({ partition, from, to });
  }
  for (const [partition, from] of before) {
    if (!after.has(partition)) removed.push({ partition, from });
  }
  return { moved, added, removed };
}
