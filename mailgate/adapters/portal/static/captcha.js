// The sign-up captcha: ALTCHA's widget (vendored, "external" build: no inline styles or
// blob: workers, so the strict Content-Security-Policy holds) with its PBKDF2 worker.
import './altcha/altcha.js';
import './altcha/fr-fr.js';

const pbkdf2 = new URL('./altcha/pbkdf2.js', import.meta.url);
for (const name of ['PBKDF2/SHA-256', 'PBKDF2/SHA-384', 'PBKDF2/SHA-512']) {
  globalThis.$altcha.algorithms.set(name, () => new Worker(pbkdf2));
}
