/** The grpc-js echo service of the bus benchmark: raw bytes both ways (the caller encodes JSON). */
import type * as grpc from '@grpc/grpc-js';

export const ECHO_SERVICE: grpc.ServiceDefinition = {
  echo: {
    path: '/bench.Bench/Echo',
    requestStream: false,
    responseStream: false,
    requestSerialize: (b: Buffer) => b,
    requestDeserialize: (b: Buffer) => b,
    responseSerialize: (b: Buffer) => b,
    responseDeserialize: (b: Buffer) => b,
  },
};
