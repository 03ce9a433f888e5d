// The public entry of @herald/client: the client factory and its types.
// Everything else under src/ is internal and may change without notice.

export { createRealtimeClient } from './client.js';
export { RoomRequestError, UploadError } from './types.js';
export type {
  ChatMessage,
  HeraldEvent,
  PresenceState,
  RealtimeClient,
  RealtimeOptions,
  RealtimeState,
  ResetReason,
  Room,
  RoomError,
  RoomMessage,
  ServiceHealth,
  TelemetryOptions,
  TransportKind,
  Upload,
  UploadMetadata,
  UploadOptions,
  UploadProgress,
  UploadResult,
  UploadState,
} from './types.js';
