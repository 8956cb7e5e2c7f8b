// @remotemedia/client: typed calls and bidirectional audio streaming for the RemoteMedia
// pipeline service. Everything public is exported here.
export { createClient, type RemoteMediaClient } from "./client.js";
export type { CallOptions, ClientOptions } from "./client-options.js";
export type { StreamTransportKind, TransportKind } from "./transport-settings.js";
export type { RetryOptions } from "./retry.js";
export { Audio } from "./audio.js";
export type { SampleFormat, Samples } from "./sample-format.js";
export {
  MANIFEST_VERSION,
  Pipeline,
  type Backoff,
  type BuiltinNodeType,
  type ManifestJson,
  type NodeOptions,
  type PipelineConfig,
  type PipelineEdge,
  type PipelineNode,
} from "./pipeline.js";
export type { Runtime, SpeechSegment } from "./nodes.js";
export type * from "./gen-catalogue/nodes.js";
export { NodeBuilders } from "./gen-catalogue/nodes.js";
export {
  BUILTIN_CATALOGUE,
  Catalogue,
  type CatalogueJson,
  type NodeTypeJson,
  type ParamProblem,
  type ParamSchema,
  type PortJson,
} from "./catalogue.js";
export type { ExecuteInputs, PipelineLike, ResourceLimits } from "./execute-request.js";
export { PipelineResult, type NodeOutcome, type RunStatus, type Transcript, type Utterance } from "./result.js";
export type { ExecutionMetrics, NodeMetrics, StreamMetrics } from "./metrics.js";
export type { VersionInfo } from "./version-info.js";
export { StreamSession, type SendOptions, type StreamOptions } from "./stream-session.js";
export { ERROR_KINDS, RemoteMediaError, type ErrorKind, type Violation } from "./error.js";
export { PROTOCOL_VERSION, PROTOCOL_VERSION_HEADER, SUPPORTED_VERSIONS_TRAILER } from "./protocol.js";
export { Code } from "@connectrpc/connect";
export * as pb from "./pb.js";
