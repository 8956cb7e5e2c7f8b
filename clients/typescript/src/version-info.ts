// VersionInfo: what GetVersion reports about the server and the client's compatibility.
import { Catalogue } from "./catalogue.js";
import type { VersionResponse } from "./gen/remotemedia/v1/service_pb.js";

export interface VersionInfo {
  /** The server's current protocol version ("v1"). */
  protocolVersion: string;
  /** Every protocol version the server supports. */
  supportedProtocols: string[];
  /** Server release. */
  runtimeVersion: string;
  /** Every registered node type, native and Python. */
  supportedNodeTypes: string[];
  /** Every node type's declaration (parameters, ports, runtimes), plug-ins included. */
  catalogue: Catalogue;
  buildTimestamp: string;
  /** Whether the version the client asked about is supported. */
  compatible: boolean;
  /** Why not, when it is not. */
  compatibilityMessage: string;
}

export function versionInfo(response: VersionResponse): VersionInfo {
  const v = response.versionInfo;
  return {
    protocolVersion: v?.protocolVersion ?? "",
    supportedProtocols: v?.supportedProtocols ?? [],
    runtimeVersion: v?.runtimeVersion ?? "",
    supportedNodeTypes: v?.supportedNodeTypes ?? [],
    catalogue: Catalogue.fromProto(v?.nodeTypes ?? []),
    buildTimestamp: v?.buildTimestamp ?? "",
    compatible: response.compatible,
    compatibilityMessage: response.compatibilityMessage,
  };
}
