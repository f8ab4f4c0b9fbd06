/** FastHistogram: the same exposition as prom-client's Histogram, label sets kept apart, the series bound. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Histogram, Registry } from 'prom-client';
import { FastHistogram } from '../../src/daemon/internal.js';

const T = { timeout: 10_000 };
const BUCKETS = [0.001, 0.01, 0.1, 1];

describe('FastHistogram', () => {
  test('exposes what prom-client exposes for the same observations', T, async () => {
    const ours = new Registry();
    const theirs = new Registry();
    const fast = new FastHistogram({
      name: 'h',
      help: 'a histogram',
      labelNames: ['service', 'method'],
      buckets: BUCKETS,
      registers: [ours],
    });
    const reference = new Histogram({
      name: 'h',
      help: 'a histogram',
      labelNames: ['service', 'method'],
      buckets: BUCKETS,
      registers: [theirs],
    });
    const observations: [string, string, number][] = [
      ['a', 'x', 0.0005],
      ['a', 'x', 0.001],
      ['a', 'y', 0.05],
      ['b', 'x', 2],
      ['a', 'x', 0.5],
      ['b', 'x', 0.01],
    ];
    for (const [service, method, v] of observations) {
      fast.observe([service, method], v);
      reference.observe({ service, method }, v);
    }
    assert.equal(await ours.metrics(), await theirs.metrics());
  });

  test('label values that would join to the same string stay separate series', T, async () => {
    const registry = new Registry();
    const fast = new FastHistogram({
      name: 'h',
      help: 'h',
      labelNames: ['a', 'b'],
      buckets: BUCKETS,
      registers: [registry],
    });
    fast.observe(['x\u0000y', 'z'], 1);
    fast.observe(['x', 'y\u0000z'], 1);
    const counts = fast.get().values.filter((v) => v.metricName === 'h_count');
    assert.equal(counts.length, 2);
    assert.deepEqual(
      counts.map((c) => c.value),
      [1, 1],
    );
  });

  test('no labels: one series; maxSeries starts the series again past the bound', T, () => {
    const plain = new FastHistogram({
      name: 'p',
      help: 'p',
      labelNames: [],
      buckets: BUCKETS,
      registers: [],
    });
    plain.observe([], 0.5);
    plain.observe([], 0.5);
    assert.deepEqual(
      plain
        .get()
        .values.filter((v) => v.metricName === 'p_count')
        .map((v) => v.value),
      [2],
    );
    const bounded = new FastHistogram({
      name: 'q',
      help: 'q',
      labelNames: ['k'],
      buckets: BUCKETS,
      registers: [],
      maxSeries: 2,
    });
    bounded.observe(['1'], 1);
    bounded.observe(['2'], 1);
    bounded.observe(['1'], 1);
    bounded.observe(['3'], 1); // a third series: the first two are dropped
    const left = bounded.get().values.filter((v) => v.metricName === 'q_count');
    assert.deepEqual(
      left.map((v) => [v.labels.k, v.value]),
      [['3', 1]],
    );
  });
});
