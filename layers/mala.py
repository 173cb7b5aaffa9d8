"""The Metropolis-adjusted Langevin algorithm (MALA), backend-neutral and compilable.

Target p(z) proportional to exp(-U(z)), `energy`: z [n, d] -> U(z) [n], each row scored on its own
(n independent chains). One transition (section 4 of the VAEPP reference, the corrected form):

    z' = z - a grad U(z) + sqrt(2 a) xi,        xi ~ N(0, I),
    log q(b | a_) = -||b - a_ + a grad U(a_)||^2 / (4 a)        (SQUARED norm: MEG's unsquared one is a bug),
    accept per chain iff log u < U(z) - U(z') + log q(z | z') - log q(z' | z),  u ~ U[0, 1),

which leaves p invariant (detailed balance). A proposal that is not finite (z', U(z') or grad U(z')) is
rejected, so one overflow cannot poison a chain. The step a is fixed (VAEPP: 1e-5 .. 5e-5; no adaptation).

The sampler is fully stop-gradiented (VAEPP's code detaches it): gradients come from
`layers.autodiff.value_and_input_gradient`, which keeps no graph. The steps run in `keras.ops.fori_loop`
over a fixed Python-int count, so the function traces once inside tf.function / jax.jit / an exported
SavedModel. All the noise, num_steps x n x (d + 1) floats, is drawn up front with `keras.random` from
`seed` (a loop body cannot advance a SeedGenerator on JAX), so the same integer seed gives the same chain
on a backend.
"""

import keras
from keras import ops

from layers.autodiff import value_and_input_gradient


def energy_and_gradient(energy, z):
    """(U(z) [n], grad U(z) [n, d]), without gradient history."""
    values, _, grad = value_and_input_gradient(lambda x: (energy(x), ()), z)
    return values, grad


def log_proposal_density(to, frm, grad_frm, step_size):
    """log q(to | frm) = -||to - frm + a grad U(frm)||^2 / (4 a) [n], without -(d/2) log(4 pi a) (it cancels)."""
    return -ops.sum(ops.square(to - frm + step_size * grad_frm), axis=-1) / (4.0 * step_size)


def _log_ratio(z, u_z, g_z, z_new, u_new, g_new, step_size):
    log_ratio = (u_z - u_new + log_proposal_density(z, z_new, g_new, step_size)
                 - log_proposal_density(z_new, z, g_z, step_size))
    finite = (ops.isfinite(u_new) & ops.all(ops.isfinite(z_new), axis=-1)
              & ops.all(ops.isfinite(g_new), axis=-1) & ops.isfinite(log_ratio))
    return ops.where(finite, log_ratio, ops.full_like(log_ratio, -float("inf")))


def log_acceptance_ratio(energy, z, z_new, step_size):
    """U(z) - U(z') + log q(z | z') - log q(z' | z) per chain [n]; the move z -> z' is accepted with
    probability min(1, exp(.)). -inf where z' (or its energy or gradient) is not finite."""
    u_z, g_z = energy_and_gradient(energy, z)
    u_new, g_new = energy_and_gradient(energy, z_new)
    return _log_ratio(z, u_z, g_z, z_new, u_new, g_new, step_size)


def mala_step(energy, z, step_size, noise, uniform, current=None):
    """One transition of every chain with the given draws: noise xi [n, d] ~ N(0, I), uniform u [n] ~ U[0, 1).

    `current`: (U(z), grad U(z)) when the caller already has them (the sampler carries them from the last
    step), else computed. Returns (z_next [n, d], accepted [n] in {0., 1.}, (U(z_next), grad U(z_next)))."""
    u_z, g_z = energy_and_gradient(energy, z) if current is None else current
    proposal = z - step_size * g_z + (2.0 * step_size) ** 0.5 * noise
    u_new, g_new = energy_and_gradient(energy, proposal)
    accept = ops.log(uniform) < _log_ratio(z, u_z, g_z, proposal, u_new, g_new, step_size)
    rows = accept[:, None]
    z_next = ops.where(rows, proposal, z)
    return z_next, ops.cast(accept, z.dtype), (ops.where(accept, u_new, u_z), ops.where(rows, g_new, g_z))


def _two_seeds(seed):
    """Seeds of the two draws: an int gives two derived ints; a SeedGenerator (or None) advances per draw."""
    if isinstance(seed, int):
        return [hash((seed, i)) % (2**31 - 1) for i in range(2)]
    return [seed, seed]


def mala(energy, z0, step_size, num_steps, seed=None):
    """Run `num_steps` MALA transitions from z0 [n, d]; return (z [n, d], acceptance rate).

    Args:
        energy: z [n, d] -> U(z) [n], U = -log target up to a constant.
        z0: the chains' starting points (not differentiated through).
        step_size: a, the Langevin step (proposal variance 2a).
        num_steps: a Python int (the loop is compiled once for it).
        seed: int or keras.random.SeedGenerator for the noise.
    Returns the final states (stop-gradiented) and the fraction of accepted moves over chains and steps
    (1.0 when num_steps is 0)."""
    num_steps = int(num_steps)
    z0 = ops.stop_gradient(ops.convert_to_tensor(z0))
    if num_steps == 0:
        return z0, ops.ones((), dtype=z0.dtype)
    shape = tuple(ops.shape(z0))
    noise_seed, uniform_seed = _two_seeds(seed)
    noise = keras.random.normal((num_steps,) + shape, dtype=z0.dtype, seed=noise_seed)
    uniforms = keras.random.uniform((num_steps, shape[0]), dtype=z0.dtype, seed=uniform_seed)
    u0, g0 = energy_and_gradient(energy, z0)

    def body(i, state):
        z, u_z, g_z, accepted = state
        z, accept, (u_z, g_z) = mala_step(energy, z, step_size, ops.take(noise, i, axis=0),
                                          ops.take(uniforms, i, axis=0), (u_z, g_z))
        return z, u_z, g_z, accepted + ops.mean(accept)

    z, _, _, accepted = ops.fori_loop(0, num_steps, body, (z0, u0, g0, ops.zeros((), dtype=z0.dtype)))
    return z, accepted / num_steps
