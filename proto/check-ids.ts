import { ErrorCode, ProtocolError } from './errors';
import { ID_RULE, isSafeId } from './ids';

/** A volume id from the wire: refused with BAD_VOLUME_ID unless it is a safe id. */
export function checkVolumeId(id: string): string {
  if (!isSafeId(id)) {
    throw new ProtocolError(ErrorCode.BAD_VOLUME_ID, `volume id ${JSON.stringify(id.slice(0, 80))} is not allowed: use ${ID_RULE}`);
  }
  return id;
}
