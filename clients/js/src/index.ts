// The public entry of @herald/client: the client factory and its types.
// Everything else under src/ is internal and may change without notice.

export { createRealtimeClient } from './client.js';
export type {
  HeraldEvent,
  RealtimeClient,
  RealtimeOptions,
  RealtimeState,
  ResetReason,
  ServiceHealth,
  TelemetryOptions,
  TransportKind,
} from './types.js';
