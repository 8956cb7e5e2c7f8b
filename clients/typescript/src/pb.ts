// The generated protobuf-es types and schemas of remotemedia.v1 and the google.rpc error
// details, for callers that need the wire messages themselves (exported as `pb`).
export * from "./gen/remotemedia/v1/common_pb.js";
export * from "./gen/remotemedia/v1/manifest_pb.js";
export * from "./gen/remotemedia/v1/execution_pb.js";
export * from "./gen/remotemedia/v1/streaming_pb.js";
export * from "./gen/remotemedia/v1/service_pb.js";
export { BadRequestSchema, ErrorInfoSchema, RetryInfoSchema } from "./gen/google/rpc/error_details_pb.js";
export type { BadRequest, ErrorInfo, RetryInfo } from "./gen/google/rpc/error_details_pb.js";
