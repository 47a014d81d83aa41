/* gr_nbody: gravitational N-body systems (G = 1) integrated with a
 * shared-step 4th-order Hermite scheme whose step follows the mu criterion
 * or Aarseth's criterion; conserved quantities for checking the results. */
#ifndef GR_NBODY_H
#define GR_NBODY_H

#include <stddef.h>
#include <stdint.h>

#define GR_NBODY_MAX 4096 /* bodies (the force loop is O(N^2)) */

/* Unit system of the RL setup (reference/nbody-rl.md): G = 1, total mass
 * 3 solar masses, length 1 au. Derived from GM_sun = 1.32712440018e20 m^3/s^2,
 * 1 au = 1.495978707e11 m and the Julian year. */
double gr_nbody_kms_per_unit(void);   /* velocity unit in km/s (51.589) */
double gr_nbody_years_per_unit(void); /* time unit in years (0.091890) */
double gr_nbody_default_chunk(void);  /* 0.1 yr in time units (1.08826) */

typedef enum {
    /* dt = mu * min over pairs of min(r/v, sqrt(r^3/(m_i+m_j))) */
    GR_NB_HERMITE = 0,
    /* dt = min over bodies of sqrt(mu * (|a||a''| + |a'|^2) / (|a'||a'''| +
     * |a''|^2)), with a'' and a''' from the Hermite interpolation of the last
     * full step; the first step uses the mu criterion, and a step may grow by
     * at most a factor 2 over the previous full one. */
    GR_NB_AARSETH = 1,
} gr_nb_integrator;

typedef struct gr_nbody gr_nbody;

/* A system of n bodies: masses m[n], positions x[3n] and velocities v[3n]
 * (x, y, z per body), copied; time starts at 0. Returns NULL with gr_errmsg()
 * naming the parameter ("masses", "positions", "velocities") and the rule on
 * bad input: n outside 2..GR_NBODY_MAX, a mass that is not finite and > 0, a
 * non-finite coordinate, two bodies at the same position. */
gr_nbody *gr_nbody_new(size_t n, const double *m, const double *x, const double *v);
/* Burrau's Pythagorean problem: masses 3, 4, 5 at rest at (1, 3), (-2, -1),
 * (1, -1); E0 = -769/60. */
gr_nbody *gr_nbody_pythagorean(void);
/* The paper's random planar triple for a seed: equal masses 1/3, body 0 at
 * the origin, body 1 uniform in x [5, 20] x y [0, 10] au, body 2 in
 * x [-10, 0] x y [5, 20] au; v0 = (0, 10) km/s, v1 = (-10, 0) km/s, v2 = 0;
 * moved to the centre-of-mass frame. Deterministic per seed (gr_rng). */
gr_nbody *gr_nbody_random3(uint64_t seed);
/* An independent copy (state, time, counters and integrator; not the cancel
 * flag or the observer). */
gr_nbody *gr_nbody_copy(const gr_nbody *nb);
void gr_nbody_destroy(gr_nbody **nb);

/* Selects the time-step rule (default GR_NB_HERMITE). GR_EINVAL if unknown. */
int gr_nbody_set_integrator(gr_nbody *nb, gr_nb_integrator kind);
/* A flag polled every few thousand steps: when it becomes nonzero,
 * gr_nbody_evolve returns GR_ECANCEL (the state is consistent, at some time
 * before t_end). NULL disables. */
void gr_nbody_set_cancel(gr_nbody *nb, volatile int *flag);

/* A function called after every accepted step (e.g. to record orbits at the
 * integrator's own resolution without changing the steps); NULL disables. */
typedef void (*gr_nbody_observer)(void *ud, const gr_nbody *nb);
void gr_nbody_set_observer(gr_nbody *nb, gr_nbody_observer fn, void *ud);

/* Integrates from the current time to exactly t_end (the last step is
 * shortened to land on it) with time-step parameter mu. Returns 0;
 * GR_EINVAL when mu is not finite and > 0 (message names "mu") or t_end is
 * before the current time or not finite; GR_ESTATE when the step collapses
 * (a collision: dt so small that t + dt == t in double precision) or the
 * state stops being finite, with the state left at the last good step;
 * GR_ECANCEL. */
int gr_nbody_evolve(gr_nbody *nb, double t_end, double mu);
/* The step the current rule would take now for parameter mu (before any
 * shortening to t_end); NAN when mu is not finite and > 0. */
double gr_nbody_timestep(const gr_nbody *nb, double mu);

size_t gr_nbody_n(const gr_nbody *nb);
double gr_nbody_time(const gr_nbody *nb);
const double *gr_nbody_masses(const gr_nbody *nb);     /* [n] */
const double *gr_nbody_positions(const gr_nbody *nb);  /* [n][3] */
const double *gr_nbody_velocities(const gr_nbody *nb); /* [n][3] */
uint64_t gr_nbody_steps(const gr_nbody *nb);           /* integration steps so far */
uint64_t gr_nbody_force_evals(const gr_nbody *nb);     /* full force+jerk evaluations */

/* Total energy (kinetic + potential), linear momentum, angular momentum
 * about the origin, centre of mass position and velocity. */
double gr_nbody_energy(const gr_nbody *nb);
void gr_nbody_momentum(const gr_nbody *nb, double p[3]);
void gr_nbody_angmom(const gr_nbody *nb, double l[3]);
void gr_nbody_com(const gr_nbody *nb, double x[3], double v[3]);

#endif
