/**
 * A policy that passed the schema but cannot be compiled (a public key that does not fit
 * its algorithms, no upstream anywhere, ...). `path` is where in the policy data the
 * problem is (`['identity', 'jwt', 'publicKey']`), so it can be reported at FILE:LINE:COL
 * like a schema error. The message stays readable without it (it names the setting).
 */
export class PolicyError extends Error {
  override readonly name = 'PolicyError';
  constructor(
    readonly path: readonly (string | number)[],
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}
