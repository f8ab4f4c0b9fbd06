/**
 * Bus metrics: Prometheus per peer and method, statsd datagrams through hot-shots.
 */
import assert from 'node:assert/strict';
import { createSocket } from 'node:dgram';
import { test } from 'node:test';
import { MemoryStore } from '../../src/store/index.js';
import { waitFor } from '../../src/testing/index.js';
import { busNodes } from './fixtures/nodes.js';

const { node } = busNodes();

test(
  'Prometheus: latency per peer and method, handled calls, in-flight, queue, reconnects; statsd datagrams',
  { timeout: 20_000 },
  async () => {
    const udp = createSocket('udp4');
    const datagrams: string[] = [];
    udp.on('message', (m) => datagrams.push(m.toString()));
    await new Promise<void>((r) => udp.bind(0, '127.0.0.1', r));
    const statsdPort = udp.address().port;
    try {
      const store = new MemoryStore();
      const server = await node(store, { id: 'srv' });
      const client = await node(store, { id: 'cli', statsd: { port: statsdPort } });
      await server.serve('svc', { echo: (m) => m });
      for (let i = 0; i < 5; i++) await client.call('svc', 'echo', i);
      const calls = await client.metrics.registry.getSingleMetricAsString('muster_bus_call_duration_seconds');
      assert.match(
        calls,
        /muster_bus_call_duration_seconds_count\{service="svc",method="echo",peer="srv",outcome="ok"\} 5/,
      );
      const handled = await server.metrics.registry.getSingleMetricAsString(
        'muster_bus_handled_duration_seconds',
      );
      assert.match(
        handled,
        /muster_bus_handled_duration_seconds_count\{service="svc",method="echo",outcome="ok"\} 5/,
      );
      const queue = await client.metrics.registry.getSingleMetricAsString('muster_bus_queue_bytes');
      assert.match(queue, /muster_bus_queue_bytes\{peer="srv"\} 0/);
      const inflight = await client.metrics.registry.getSingleMetricAsString('muster_bus_in_flight');
      assert.match(inflight, /muster_bus_in_flight\{peer="srv"\} 0/);
      // A reconnect to the same address is counted.
      for (const c of client.peers().values()) c.socket.destroy();
      await new Promise((r) => setTimeout(r, 1100)); // past the down back-off
      await client.call('svc', 'echo', 'again');
      const reconnects = await client.metrics.registry.getSingleMetricAsString('muster_bus_reconnects_total');
      assert.match(reconnects, new RegExp(`muster_bus_reconnects_total\\{peer="${server.address}"\\} 1`));
      await waitFor(() => datagrams.some((d) => d.includes('muster.bus.call.svc.echo:')), {
        what: 'a statsd timing for svc.echo',
      });
    } finally {
      udp.close();
    }
  },
);
