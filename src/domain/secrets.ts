// Secrets Tollgate must send on but never show (webhook header values), kept encrypted at rest
// with AES-256-GCM under TOLLGATE_SECRET_KEY. A stored secret reads
// `tgs1.<key id>.<iv|ciphertext|tag, base64url>`: the key id (a digest of the key, not the key)
// says which key sealed it, so a changed key is named as the cause instead of a bare failure.
// The context (what the secret belongs to) is authenticated with it: a secret copied into
// another place does not open there.
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';

const PREFIX = 'tgs1';
const IV_BYTES = 12;
const TAG_BYTES = 16;

/** A short public name for a key: which key sealed a secret, without saying anything of the key. */
function secretKeyId(key: Buffer): string {
  return createHash('sha256').update('tollgate secret key id\0').update(key).digest('hex').slice(0, 8);
}

export function sealSecret(key: Buffer, plaintext: string, context: string): string {
  const iv = randomBytes(IV_BYTES);
  const cipher = createCipheriv('aes-256-gcm', key, iv);
  cipher.setAAD(Buffer.from(context, 'utf8'));
  const sealed = Buffer.concat([iv, cipher.update(plaintext, 'utf8'), cipher.final(), cipher.getAuthTag()]);
  return `${PREFIX}.${secretKeyId(key)}.${sealed.toString('base64url')}`;
}

/** Why a stored secret cannot be opened, in words an operator can act on. */
export class SecretUnavailableError extends Error {
  override name = 'SecretUnavailableError';
}

export function openSecret(key: Buffer | null, sealed: string, context: string): string {
  const [prefix, keyId, body] = sealed.split('.');
  if (prefix !== PREFIX || !keyId || !body) throw new SecretUnavailableError('it is not a secret sealed by Tollgate');
  if (!key) throw new SecretUnavailableError(`TOLLGATE_SECRET_KEY is not set (the secret was sealed with key ${keyId})`);
  const current = secretKeyId(key);
  if (current !== keyId) throw new SecretUnavailableError(`it was sealed with key ${keyId} and TOLLGATE_SECRET_KEY is key ${current}`);
  const raw = Buffer.from(body, 'base64url');
  if (raw.length < IV_BYTES + TAG_BYTES) throw new SecretUnavailableError('it is damaged');
  try {
    const decipher = createDecipheriv('aes-256-gcm', key, raw.subarray(0, IV_BYTES));
    decipher.setAAD(Buffer.from(context, 'utf8'));
    decipher.setAuthTag(raw.subarray(raw.length - TAG_BYTES));
    return Buffer.concat([decipher.update(raw.subarray(IV_BYTES, raw.length - TAG_BYTES)), decipher.final()]).toString('utf8');
  } catch {
    throw new SecretUnavailableError('it does not open here: damaged, or sealed for another place');
  }
}
