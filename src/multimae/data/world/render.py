"""Vectorised analytic ray casting of a `Scene` on the CPU (numpy).

One primary ray per pixel centre gives the exact geometric modalities (depth, normals, semseg,
instance); RGB is shaded from the same rays (Lambert + Blinn-Phong, point lights with cast
shadows, ambient light) and anti-aliased by casting four more rays only where a pixel's
neighbours see another surface; textures are box-filtered analytically
over the pixel footprint, so they do not alias either.

Camera frame (used for ``normals``): OpenCV convention, ``x`` right, ``y`` down, ``z`` forward;
``depth`` is the ``z`` coordinate of the hit point in that frame (z-depth, scene units).
Shapes: ``H, W`` image size, ``M`` rays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from multimae.data.world.classes import BACKGROUND_CLASSES, COLORS, OBJECT_CLASSES
from multimae.data.world.scenes import Camera, Scene, SceneObject, Texture

# Surface ids: the room's six faces, then object k is surface FIRST_OBJECT + k.
FLOOR, WALL_XN, WALL_XP, WALL_ZN, WALL_ZP, CEILING = range(6)
FIRST_OBJECT = 6
_EPS = 1e-6
_SHININESS = {"matte": 1.0, "shiny": 40.0}
_SPECULAR = {"matte": 0.0, "shiny": 0.5}
# Sub-pixel offsets (rotated grid) of the four extra anti-aliasing rays.
_AA_OFFSETS = ((-0.125, -0.375), (0.375, -0.125), (0.125, 0.375), (-0.375, 0.125))


@dataclass(frozen=True)
class Rendering:
    """Aligned outputs of one scene.

    Attributes:
        rgb: uint8 ``(H, W, 3)``.
        depth: float32 ``(H, W)`` z-depth in scene units (finite: the room is closed).
        normals: float32 ``(H, W, 3)`` unit normals in the camera frame (x right, y down, z forward).
        semseg: int64 ``(H, W)`` indices into `CLASS_NAMES`.
        instance: int64 ``(H, W)``: 0 for the room, ``k + 1`` for ``scene.objects[k]``.
    """

    rgb: np.ndarray
    depth: np.ndarray
    normals: np.ndarray
    semseg: np.ndarray
    instance: np.ndarray


# ----------------------------------------------------------------------------------- primitives
# Each takes rays sharing an origin o (3,) in the object's local frame (y up, resting on y = 0),
# with directions d (M, 3), and returns t: (M,) (inf where missed) and the local normal n: (M, 3).

def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", a, b)


def _normalize(v: np.ndarray) -> np.ndarray:
    return v / np.sqrt(np.maximum(_dot(v, v), 1e-24))[:, None]


def _nearest(t1: np.ndarray, n1: np.ndarray, t2: np.ndarray, n2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    closer = t2 < t1
    return np.where(closer, t2, t1), np.where(closer[:, None], n2, n1)


def _sphere(o: np.ndarray, d: np.ndarray, radius: float, cy: float) -> tuple[np.ndarray, np.ndarray]:
    oc = o - np.array([0.0, cy, 0.0])
    b = d @ oc
    disc = b * b - (oc @ oc - radius * radius)
    t = -b - np.sqrt(np.maximum(disc, 0.0))
    t = np.where((disc >= 0) & (t > _EPS), t, np.inf)
    n = (oc + np.where(np.isfinite(t), t, 0.0)[:, None] * d) / radius
    return t, n


def _convex(o: np.ndarray, d: np.ndarray, planes: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Convex polyhedron ``{x : planes @ x <= offsets}`` with unit outward ``planes`` (K, 3)."""
    denom = d @ planes.T  # (M, K)
    num = offsets - planes @ o  # (K,)
    with np.errstate(divide="ignore", invalid="ignore"):
        tt = num / denom
    t_in = np.where(denom < 0, tt, -np.inf)
    t_out = np.where(denom > 0, tt, np.inf).min(axis=1)
    k_in = t_in.argmax(axis=1)
    t_enter = t_in[np.arange(len(d)), k_in]
    outside_parallel = ((denom == 0) & (num < 0)).any(axis=1)
    hit = (t_enter <= t_out) & (t_enter > _EPS) & ~outside_parallel
    return np.where(hit, t_enter, np.inf), planes[k_in]


def _cylinder_side(o: np.ndarray, d: np.ndarray, radius: float, y0: float, y1: float) -> tuple[np.ndarray, np.ndarray]:
    dx, dy, dz = d.T
    a = dx * dx + dz * dz
    b = 2 * (o[0] * dx + o[2] * dz)
    c = o[0] ** 2 + o[2] ** 2 - radius * radius
    disc = b * b - 4 * a * c
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (-b - np.sqrt(np.maximum(disc, 0.0))) / (2 * a)
    y = o[1] + t * dy
    t = np.where((disc >= 0) & (a > 1e-12) & (t > _EPS) & (y >= y0) & (y <= y1), t, np.inf)
    tf = np.where(np.isfinite(t), t, 0.0)
    n = np.stack([(o[0] + tf * dx) / radius, np.zeros(len(d)), (o[2] + tf * dz) / radius], axis=1)
    return t, n


def _top_cap(o: np.ndarray, d: np.ndarray, radius: float, y: float) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (y - o[1]) / d[:, 1]
    x, z = o[0] + t * d[:, 0], o[2] + t * d[:, 2]
    t = np.where((d[:, 1] < 0) & (t > _EPS) & (x * x + z * z <= radius * radius), t, np.inf)
    n = np.broadcast_to(np.array([0.0, 1.0, 0.0]), d.shape)
    return t, n


def _cone(o: np.ndarray, d: np.ndarray, radius: float, height: float) -> tuple[np.ndarray, np.ndarray]:
    """Cone with its base (radius) on y = 0 and its apex at y = height."""
    k2 = (radius / height) ** 2
    dx, dy, dz = d.T
    oy = height - o[1]  # measured down from the apex, along -y
    a = dx * dx + dz * dz - k2 * dy * dy
    b = 2 * (o[0] * dx + o[2] * dz + k2 * oy * dy)
    c = o[0] ** 2 + o[2] ** 2 - k2 * oy * oy
    disc = b * b - 4 * a * c
    sq = np.sqrt(np.maximum(disc, 0.0))
    best = np.full(len(d), np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        for t in ((-b - sq) / (2 * a), (-b + sq) / (2 * a)):
            y = o[1] + t * dy
            ok = (disc >= 0) & (t > _EPS) & (y >= 0) & (y <= height) & (t < best)
            best = np.where(ok, t, best)
    p = o + np.where(np.isfinite(best), best, 0.0)[:, None] * d
    return best, _normalize(np.stack([p[:, 0], k2 * (height - p[:, 1]), p[:, 2]], axis=1))


def _box_planes(half: float, height: float) -> tuple[np.ndarray, np.ndarray]:
    planes = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], dtype=float)
    return planes, np.array([half, half, height, 0.0, half, half])


def _pyramid_planes(half: float, height: float) -> tuple[np.ndarray, np.ndarray]:
    sides = np.array([[height, half, 0], [-height, half, 0], [0, half, height], [0, half, -height]], dtype=float)
    norm = np.linalg.norm(sides[0])
    planes = np.concatenate([sides / norm, [[0.0, -1.0, 0.0]]])
    return planes, np.array([half * height / norm] * 4 + [0.0])


def _intersect_local(obj: SceneObject, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r, h = obj.size, obj.height
    if obj.shape == "sphere":
        return _sphere(o, d, r, r)
    if obj.shape == "cube":
        return _convex(o, d, *_box_planes(r, h))
    if obj.shape == "pyramid":
        return _convex(o, d, *_pyramid_planes(r, h))
    if obj.shape == "cylinder":
        return _nearest(*_cylinder_side(o, d, r, 0.0, h), *_top_cap(o, d, r, h))
    if obj.shape == "cone":
        return _cone(o, d, r, h)
    if obj.shape == "capsule":
        t, n = _nearest(*_sphere(o, d, r, r), *_sphere(o, d, r, h - r))
        return _nearest(t, n, *_cylinder_side(o, d, r, r, h - r))
    raise ValueError(f"unknown object shape {obj.shape!r}; shapes are {OBJECT_CLASSES}")


def _intersect_object(obj: SceneObject, origin: np.ndarray, d: np.ndarray, t_max: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rays sharing one ``origin`` (3,) with directions d (M, 3) against one object.

    Returns the indices of the rays that hit it before ``t_max`` (M,), their t and world normals.
    Rays are first culled against the object's bounding sphere (one mat-vec for all rays).
    """
    to_centre = np.array(obj.centre) - origin
    dist = math.sqrt(to_centre @ to_centre)
    if dist <= obj.bounding_radius:  # origin inside the bounding sphere: no culling
        idx = np.arange(len(d))
    else:  # the sphere is seen from the origin within a cone of half-angle asin(radius / dist)
        cos_half = math.sqrt(1.0 - (obj.bounding_radius / dist) ** 2)
        idx = np.flatnonzero((d @ (to_centre / dist) > cos_half) & (t_max > dist - obj.bounding_radius))
    if idx.size == 0:
        return idx, np.empty(0), np.empty((0, 3))
    c, s = math.cos(obj.yaw), math.sin(obj.yaw)
    rot = np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])  # local -> world
    d_l = d[idx] @ rot  # row-vector form of rot.T @ x
    o_l = (origin - np.array([obj.x, 0.0, obj.z])) @ rot
    t, n_l = _intersect_local(obj, o_l, d_l)
    keep = t < t_max[idx]
    return idx[keep], t[keep], n_l[keep] @ rot.T


# ----------------------------------------------------------------------------------- tracing

def _trace_room(scene: Scene, origin: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rays from inside the room to its walls: (t, surface id, inward normal)."""
    lo = np.array([-scene.half_x, 0.0, -scene.half_z])
    hi = np.array([scene.half_x, scene.height, scene.half_z])
    safe = np.where(np.abs(d) < 1e-12, 1e-12, d)
    tt = (np.where(safe > 0, hi, lo) - origin) / safe  # (M, 3)
    axis = tt.argmin(axis=1)
    t = tt[np.arange(len(d)), axis]
    positive = safe[np.arange(len(d)), axis] > 0
    sid = np.array([[WALL_XN, WALL_XP], [FLOOR, CEILING], [WALL_ZN, WALL_ZP]])[axis, positive.astype(int)]
    n = np.zeros_like(d)
    n[np.arange(len(d)), axis] = np.where(positive, -1.0, 1.0)
    return t, sid, n


def _trace(scene: Scene, origin: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest hit of rays from ``origin`` (3,) along d (M, 3): t (M,), surface id (M,), world normal (M, 3)."""
    t, sid, n = _trace_room(scene, origin, d)
    for k, obj in enumerate(scene.objects):
        idx, tk, nk = _intersect_object(obj, origin, d, t)
        t[idx], sid[idx], n[idx] = tk, FIRST_OBJECT + k, nk
    return t, sid, n


def _occluded(scene: Scene, light: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Whether an object blocks the segment from the ``light`` (3,) to each point p (M, 3).

    Shadow rays are cast from the light, so they share an origin; a hit must come clearly before
    the point itself (the point may lie on the object that is hit last).
    """
    to_p = p - light
    dist = np.sqrt(_dot(to_p, to_p))
    d = to_p / dist[:, None]
    t_max = dist * (1 - 1e-5) - 1e-4
    hit = np.zeros(len(p), dtype=bool)
    for obj in scene.objects:
        idx, _, _ = _intersect_object(obj, light, d, t_max)
        hit[idx] = True
    return hit


# ----------------------------------------------------------------------------------- shading

def _srgb_to_linear(c: np.ndarray) -> np.ndarray:
    return np.power(c, 2.2)


def _filtered_square(x: np.ndarray, period: float, width: np.ndarray) -> np.ndarray:
    """A +-1 square wave of ``period`` box-filtered over ``width`` (its integral is a triangle wave)."""
    def integral(v: np.ndarray) -> np.ndarray:
        f = v / period - np.floor(v / period)
        return period * np.minimum(f, 1.0 - f)

    w = np.maximum(width, 1e-4 * period)
    return np.clip((integral(x + w / 2) - integral(x - w / 2)) / w, -1.0, 1.0)


def _texture_mix(tex: Texture, u: np.ndarray, v: np.ndarray, width: np.ndarray) -> np.ndarray:
    """Weight of ``color_b`` in [0, 1] at surface coordinates (u, v), filtered over ``width``."""
    c, s = math.cos(tex.angle), math.sin(tex.angle)
    u, v = c * u - s * v, s * u + c * v
    if tex.kind == "checker":
        return 0.5 - 0.5 * _filtered_square(u, tex.period, width) * _filtered_square(v, tex.period, width)
    if tex.kind == "stripes":
        return 0.5 - 0.5 * _filtered_square(u, tex.period, width)
    if tex.kind == "noise":
        grid = tex.noise
        gu, gv = u / tex.period * 2, v / tex.period * 2
        iu, iv = np.floor(gu).astype(int), np.floor(gv).astype(int)
        fu, fv = gu - iu, gv - iv
        n = grid.shape[0]
        i0, i1, j0, j1 = iu % n, (iu + 1) % n, iv % n, (iv + 1) % n
        val = (grid[i0, j0] * (1 - fu) * (1 - fv) + grid[i1, j0] * fu * (1 - fv)
               + grid[i0, j1] * (1 - fu) * fv + grid[i1, j1] * fu * fv)
        fade = np.clip(1.0 - width / (0.5 * tex.period), 0.0, 1.0)
        return 0.5 + (val - 0.5) * fade
    return np.zeros_like(u)


def _albedo(scene: Scene, p: np.ndarray, sid: np.ndarray, width: np.ndarray) -> np.ndarray:
    """sRGB albedo (M, 3) of the surfaces hit at points p."""
    table = np.zeros((FIRST_OBJECT + len(scene.objects), 3))
    table[FLOOR] = scene.floor.color_a
    table[WALL_XN:WALL_ZP + 1] = scene.wall.color_a
    table[CEILING] = scene.ceiling
    for k, obj in enumerate(scene.objects):
        table[FIRST_OBJECT + k] = COLORS[obj.color_name]
    albedo = table[sid]
    for tex, mask, (a, b) in (
        (scene.floor, sid == FLOOR, (0, 2)),
        (scene.wall, (sid == WALL_XN) | (sid == WALL_XP), (2, 1)),
        (scene.wall, (sid == WALL_ZN) | (sid == WALL_ZP), (0, 1)),
    ):
        if tex.kind == "plain" or not mask.any():
            continue
        idx = np.flatnonzero(mask)
        m = _texture_mix(tex, p[idx, a], p[idx, b], width[idx])[:, None]
        albedo[idx] = (1 - m) * np.array(tex.color_a) + m * np.array(tex.color_b)
    return albedo


def _shade(scene: Scene, origin: np.ndarray, d: np.ndarray, t: np.ndarray, sid: np.ndarray, n: np.ndarray,
           pixel_angle: np.ndarray) -> np.ndarray:
    """Linear RGB (M, 3) of the hits; ``pixel_angle`` (M,) is each ray's footprint angle (texture filter)."""
    p = origin + t[:, None] * d
    width = t * pixel_angle / np.maximum(np.abs(_dot(n, d)), 0.15)
    albedo = _srgb_to_linear(_albedo(scene, p, sid, width))
    spec_k = np.zeros(FIRST_OBJECT + len(scene.objects))
    shininess = np.ones_like(spec_k)
    for k, obj in enumerate(scene.objects):
        spec_k[FIRST_OBJECT + k] = _SPECULAR[obj.material]
        shininess[FIRST_OBJECT + k] = _SHININESS[obj.material]
    diffuse = np.full(len(t), scene.ambient)
    specular = np.zeros(len(t))
    for light in scene.lights:
        l = _normalize(np.array(light.position) - p)
        ndl = _dot(n, l)
        facing = np.flatnonzero(ndl > 0)
        blocked = np.ones(len(t), dtype=bool)
        blocked[facing] = _occluded(scene, np.array(light.position), p[facing])
        lit = ~blocked
        diffuse += np.where(lit, light.intensity * ndl, 0.0)
        half = _normalize(l - d)
        ndh = np.clip(_dot(n, half), 0.0, 1.0)
        specular += np.where(lit, light.intensity * spec_k[sid] * ndh ** shininess[sid], 0.0)
    rgb = albedo * diffuse[:, None] + specular[:, None]
    return rgb


# ----------------------------------------------------------------------------------- camera

def camera_basis(camera: Camera) -> np.ndarray:
    """Rows: right, down, forward unit vectors (world frame) of the camera (3, 3)."""
    forward = np.array(camera.target) - np.array(camera.position)
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    return np.stack([right, down, forward])


def _ray_dirs(basis: np.ndarray, tan_half: float, size: int, rows: np.ndarray, cols: np.ndarray,
              dy: float, dx: float) -> np.ndarray:
    x = ((cols + 0.5 + dx) / size * 2 - 1) * tan_half
    y = ((rows + 0.5 + dy) / size * 2 - 1) * tan_half
    return _normalize(x[:, None] * basis[0] + y[:, None] * basis[1] + basis[2])


def _edges(key: np.ndarray) -> np.ndarray:
    """Pixels (H, W) whose right or lower neighbour differs in ``key``, and those neighbours."""
    edge = np.zeros(key.shape, dtype=bool)
    dx = key[:, 1:] != key[:, :-1]
    dy = key[1:, :] != key[:-1, :]
    edge[:, 1:] |= dx
    edge[:, :-1] |= dx
    edge[1:, :] |= dy
    edge[:-1, :] |= dy
    return edge


def _to_srgb8(linear: np.ndarray) -> np.ndarray:
    return np.round(np.power(np.clip(linear, 0.0, 1.0), 1 / 2.2) * 255).astype(np.uint8)


def render(scene: Scene, size: int = 64, antialias: bool = True) -> Rendering:
    """Render ``scene`` to square ``size`` x ``size`` aligned maps (see `Rendering`)."""
    if size < 2:
        raise ValueError(f"image size must be >= 2, got {size}")
    basis = camera_basis(scene.camera)
    tan_half = math.tan(math.radians(scene.camera.fov_deg) / 2)
    pixel_angle = 2 * tan_half / size
    rows, cols = np.divmod(np.arange(size * size), size)
    d = _ray_dirs(basis, tan_half, size, rows, cols, 0.0, 0.0)
    origin = np.array(scene.camera.position)
    t, sid, n = _trace(scene, origin, d)
    edge = np.flatnonzero(_edges(sid.reshape(size, size))) if antialias else np.empty(0, dtype=int)
    angles = np.full(len(d), pixel_angle)
    if edge.size:  # extra rays where a pixel's neighbour sees another surface; shaded in one batch
        d_aa = np.concatenate(
            [_ray_dirs(basis, tan_half, size, rows[edge], cols[edge], dy, dx) for dy, dx in _AA_OFFSETS]
        )
        hits = [np.concatenate(pair) for pair in zip((t, sid, n), _trace(scene, origin, d_aa))]
        d_all = np.concatenate([d, d_aa])
        angles = np.concatenate([angles, np.full(len(d_aa), pixel_angle / 2)])
    else:
        hits, d_all = [t, sid, n], d
    shaded = _shade(scene, origin, d_all, *hits, angles)
    rgb = shaded[: len(d)]
    if edge.size:
        extra = shaded[len(d):].reshape(len(_AA_OFFSETS), edge.size, 3).sum(0)
        rgb[edge] = (rgb[edge] + extra) / (1 + len(_AA_OFFSETS))
    semseg_of_surface = np.array(
        [0, 1, 1, 1, 1, 2] + [len(BACKGROUND_CLASSES) + OBJECT_CLASSES.index(o_.shape) for o_ in scene.objects]
    )
    instance_of_surface = np.array([0] * FIRST_OBJECT + list(range(1, len(scene.objects) + 1)))
    return Rendering(
        rgb=_to_srgb8(rgb).reshape(size, size, 3),
        depth=(t * (d @ basis[2])).astype(np.float32).reshape(size, size),
        normals=(n @ basis.T).astype(np.float32).reshape(size, size, 3),
        semseg=semseg_of_surface[sid].reshape(size, size).astype(np.int64),
        instance=instance_of_surface[sid].reshape(size, size).astype(np.int64),
    )
