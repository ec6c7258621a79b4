//! NRRD volumes (`.nrrd` with attached data), per the teem NRRD format specification
//! (<http://teem.sourceforge.net/nrrd/format.html>, NRRD0001–NRRD0005). Our own reader: no
//! well-kept Rust crate exists (STYLE §12), and the format's scalar 3D subset is small.
//!
//! Read: the magic line `NRRD000<1..5>`, comments (`#`), key/value pairs (`key:=value`, kept
//! out), and the fields
//! * `type` (every integer width and spelling of the spec, `float`, `double`; `block` refused),
//! * `dimension` (must be 3; 2D and 4D are refused), `sizes`,
//! * `endian` (required for multi-byte types), `encoding` (`raw`, `gzip`/`gz`; `bzip2`,
//!   `ascii`/`text`, `hex` are refused as unsupported), `byte skip` (≥ 0, or −1 with raw),
//! * `space` (`right-anterior-superior`/`RAS`, `left-anterior-superior`/`LAS`,
//!   `left-posterior-superior`/`LPS`; a non-patient space such as `scanner-xyz` is refused),
//!   `space directions` (one vector per axis, `none` refused), `space origin` (default 0),
//! * `spacings` when there is no `space`: axes along the patient axes with ITK's reading, LPS,
//!   origin 0 (pynrrd gives no affine for such files; ITK/3D Slicer read them this way),
//! * `kinds`: each must be spatial (`domain`, `space`, `???`, `none`).
//!
//! Detached data (`data file:`, `.nhdr`) and `line skip` are refused with a clear error.
//! Descriptive fields (`content`, `thicknesses`, `measurement frame`, ...) are ignored. The
//! patient coordinates are converted to RAS+ (see [`super::geometry`]): a `space` of LPS
//! negates the x and y rows of `[directions | origin]`, LAS the x row.

use flate2::read::MultiGzDecoder;

use super::buffer::{decode_dense, ByteOrder, DType, Rescale};
use super::geometry::{check_affine, check_dims, non_finite, Affine, Geometry};
use super::{check_gzip_tail, read_exact_bounded, Volume};
use crate::error::{Error, Result};

/// Largest header accepted (bytes up to the blank line that ends it).
const MAX_HEADER: usize = 1 << 20;

#[derive(Debug, Default)]
struct Header {
    version: u8,
    dtype: Option<DType>,
    dimension: Option<usize>,
    sizes: Option<Vec<usize>>,
    endian: Option<ByteOrder>,
    encoding: Option<String>,
    space: Option<String>,
    directions: Option<Vec<[f64; 3]>>,
    origin: Option<[f64; 3]>,
    spacings: Option<Vec<f64>>,
    byte_skip: i64,
}

/// Reads an NRRD file already in memory. `name` is used in errors and in the source.
pub fn read_bytes(bytes: &[u8], name: &str) -> Result<Volume> {
    let (hdr, data_start) = parse_header(bytes, name)?;
    let dim = hdr.dimension.ok_or_else(|| missing(name, "dimension"))?;
    if dim != 3 {
        return Err(Error::Shape {
            what: format!("{name}: NRRD dimension"),
            expected: "3 (a 3D scalar volume)".into(),
            found: dim.to_string(),
        });
    }
    let sizes = hdr.sizes.clone().ok_or_else(|| missing(name, "sizes"))?;
    if sizes.len() != 3 {
        return Err(Error::format(name, format!("`sizes` has {} values, `dimension` is 3", sizes.len())));
    }
    let dims = [sizes[0], sizes[1], sizes[2]];
    let nvox = check_dims(&dims, name)?;
    let dtype = hdr.dtype.ok_or_else(|| missing(name, "type"))?;
    let encoding = hdr.encoding.clone().ok_or_else(|| missing(name, "encoding"))?;
    let order = match hdr.endian {
        Some(o) => o,
        None if dtype.size() == 1 => ByteOrder::NATIVE,
        None => return Err(missing(name, "endian")),
    };
    let (affine, space) = affine_of(&hdr, name)?;
    let geometry = Geometry::new(dims, affine, name)?;

    let nbytes = nvox * dtype.size();
    let body = &bytes[data_start..];
    let data = match encoding.as_str() {
        "raw" => {
            let start = match hdr.byte_skip {
                -1 => body.len().checked_sub(nbytes),
                n => usize::try_from(n).ok().filter(|&n| n <= body.len()),
            };
            match start.filter(|&s| body.len() - s >= nbytes) {
                Some(s) => decode_dense(&body[s..s + nbytes], dtype, order, Rescale::IDENTITY),
                None => {
                    return Err(Error::format(
                        name,
                        format!(
                            "truncated: {nbytes} bytes of raw voxel data expected (byte skip {}), the file has {} \
                             after its header",
                            hdr.byte_skip,
                            body.len()
                        ),
                    ))
                }
            }
        }
        "gzip" | "gz" => {
            let mut stream = MultiGzDecoder::new(body);
            if hdr.byte_skip < 0 {
                return Err(Error::format(name, "`byte skip: -1` is only allowed with raw encoding"));
            }
            let skip = hdr.byte_skip as u64;
            let skipped = std::io::copy(&mut std::io::Read::take(&mut stream, skip), &mut std::io::sink())
                .map_err(|e| Error::format(name, format!("corrupt or truncated gzip data: {e}")))?;
            if skipped < skip {
                return Err(Error::format(name, "truncated: the gzip data ends within `byte skip`"));
            }
            let raw = read_exact_bounded(&mut stream, nbytes, name)?;
            check_gzip_tail(&mut stream, name)?;
            decode_dense(&raw, dtype, order, Rescale::IDENTITY)
        }
        other => {
            return Err(Error::Unsupported(format!(
                "{name}: NRRD encoding `{other}` (raw and gzip are read; re-save with `unu save -e gzip`)"
            )))
        }
    };
    if let Some((count, p)) = non_finite(&data, dims) {
        return Err(Error::format(
            name,
            format!(
                "{count} voxels are NaN or infinite; the first is at voxel ({}, {}, {})",
                p[0], p[1], p[2]
            ),
        ));
    }
    let source = format!("{name} (NRRD000{}, {}, {encoding}, {space})", hdr.version, dtype.name());
    Ok(Volume { data, geometry, dtype, source })
}

/// Writes `volume` as an NRRD0004 file in memory: `space: right-anterior-superior`, the
/// volume's affine as `space directions`/`space origin`, raw little-endian `int16` (CT HU) or
/// `uint16` (labels), so that [`read_bytes`] gives back the same voxels and geometry. Every
/// value must be an integer in the type's range, else an [`Error::InvalidArgument`] naming the
/// voxel.
pub fn write_bytes(volume: &Volume, dtype: DType) -> Result<Vec<u8>> {
    let (lo, hi, name) = match dtype {
        DType::I16 => (i16::MIN as f32, i16::MAX as f32, "int16"),
        DType::U16 => (0.0, u16::MAX as f32, "uint16"),
        other => return Err(Error::Unsupported(format!("writing NRRD as {}", other.name()))),
    };
    let a = volume.affine();
    let [nx, ny, nz] = volume.dims();
    let dir = |c: usize| format!("({},{},{})", a[0][c], a[1][c], a[2][c]);
    let mut out = format!(
        "NRRD0004\ntype: {name}\ndimension: 3\nspace: right-anterior-superior\nsizes: {nx} {ny} {nz}\n\
         space directions: {} {} {}\nkinds: domain domain domain\nendian: little\nencoding: raw\n\
         space origin: ({},{},{})\n\n",
        dir(0),
        dir(1),
        dir(2),
        a[0][3],
        a[1][3],
        a[2][3]
    )
    .into_bytes();
    out.reserve(volume.data().len() * 2);
    for (i, &v) in volume.data().iter().enumerate() {
        if !(v >= lo && v <= hi && v.fract() == 0.0) {
            return Err(Error::invalid(
                "NRRD output",
                format!("voxel {i} holds {v}, not an integer in the {name} range"),
            ));
        }
        match dtype {
            DType::I16 => out.extend((v as i16).to_le_bytes()),
            _ => out.extend((v as u16).to_le_bytes()),
        }
    }
    Ok(out)
}

fn missing(name: &str, field: &str) -> Error {
    Error::format(name, format!("required NRRD field `{field}` is missing"))
}

/// Parses the header; returns it and the offset of the first data byte.
fn parse_header(bytes: &[u8], name: &str) -> Result<(Header, usize)> {
    let mut hdr = Header::default();
    let mut pos = 0usize;
    let mut first = true;
    let mut seen: Vec<String> = Vec::new();
    loop {
        if pos >= bytes.len() {
            return Err(Error::Unsupported(format!(
                "{name}: the NRRD header has no data after it (a detached header, .nhdr; only attached \
                 data is read)"
            )));
        }
        if pos > MAX_HEADER {
            return Err(Error::format(name, format!("NRRD header longer than {MAX_HEADER} bytes")));
        }
        let end = bytes[pos..].iter().position(|&b| b == b'\n').map_or(bytes.len(), |i| pos + i);
        let raw_line = &bytes[pos..end];
        pos = end + 1;
        let line = std::str::from_utf8(raw_line)
            .map_err(|_| Error::format(name, "NRRD header line is not UTF-8/ASCII"))?
            .trim_end_matches('\r');
        if first {
            first = false;
            let v = line.strip_prefix("NRRD000").and_then(|v| v.parse::<u8>().ok());
            match v {
                Some(v @ 1..=5) => hdr.version = v,
                _ => {
                    return Err(Error::format(
                        name,
                        format!(
                            "not an NRRD file: first line {:?}, expected NRRD0001..NRRD0005",
                            trunc(line)
                        ),
                    ))
                }
            }
            continue;
        }
        if line.is_empty() {
            return Ok((hdr, pos.min(bytes.len())));
        }
        if line.starts_with('#') {
            continue;
        }
        let colon_eq = line.find(":=");
        let colon_sp = line.find(": ");
        match (colon_eq, colon_sp) {
            (Some(kv), sp) if sp.is_none_or(|sp| kv < sp) => continue, // key/value pair
            (_, Some(sp)) => {
                let field = line[..sp].trim().to_ascii_lowercase();
                let value = line[sp + 2..].trim();
                if seen.contains(&field) {
                    return Err(Error::format(name, format!("NRRD field `{field}` appears twice")));
                }
                seen.push(field.clone());
                set_field(&mut hdr, &field, value, name)?;
            }
            _ => return Err(Error::format(name, format!("malformed NRRD header line {:?}", trunc(line)))),
        }
    }
}

fn trunc(s: &str) -> String {
    s.chars().take(80).collect()
}

fn set_field(hdr: &mut Header, field: &str, value: &str, name: &str) -> Result<()> {
    let bad = |what: &str| Error::format(name, format!("NRRD field `{field}`: {what}: {:?}", trunc(value)));
    match field {
        "type" => hdr.dtype = Some(parse_type(value, name)?),
        "dimension" => hdr.dimension = Some(value.parse().map_err(|_| bad("not a positive integer"))?),
        "sizes" => {
            let v: std::result::Result<Vec<usize>, _> = value.split_whitespace().map(str::parse).collect();
            hdr.sizes = Some(v.map_err(|_| bad("not a list of sizes"))?);
        }
        "endian" => {
            hdr.endian = Some(match value {
                "little" => ByteOrder::Little,
                "big" => ByteOrder::Big,
                _ => return Err(bad("expected `little` or `big`")),
            })
        }
        "encoding" => hdr.encoding = Some(value.to_ascii_lowercase()),
        "space" => hdr.space = Some(value.to_string()),
        "space dimension" => {
            return Err(Error::Unsupported(format!(
            "{name}: `space dimension` without a named patient space (use `space: left-posterior-superior`)"
        )))
        }
        "space directions" => {
            let mut dirs = Vec::new();
            for tok in split_vectors(value).ok_or_else(|| bad("malformed vectors"))? {
                if tok == "none" {
                    return Err(Error::Unsupported(format!(
                        "{name}: a non-spatial axis (`none` in `space directions`); a CT is a 3D scalar volume"
                    )));
                }
                dirs.push(parse_vector(&tok).ok_or_else(|| bad("malformed vector"))?);
            }
            hdr.directions = Some(dirs);
        }
        "space origin" => {
            hdr.origin = Some(parse_vector(value.trim()).ok_or_else(|| bad("malformed vector"))?);
        }
        "spacings" => {
            let v: std::result::Result<Vec<f64>, _> = value.split_whitespace().map(str::parse).collect();
            hdr.spacings = Some(v.map_err(|_| bad("not a list of numbers"))?);
        }
        "kinds" => {
            for k in value.split_whitespace() {
                if !matches!(k, "domain" | "space" | "???" | "none") {
                    return Err(Error::Unsupported(format!(
                        "{name}: axis kind `{k}` (a CT is a 3D scalar volume with spatial axes only)"
                    )));
                }
            }
        }
        "byte skip" | "byteskip" => {
            let n: i64 = value.parse().map_err(|_| bad("not an integer"))?;
            if n < -1 {
                return Err(bad("must be -1 or >= 0"));
            }
            hdr.byte_skip = n;
        }
        "line skip" | "lineskip" if value != "0" => {
            return Err(Error::Unsupported(format!("{name}: NRRD `line skip` (only detached data uses it)")));
        }
        "data file" | "datafile" => {
            return Err(Error::Unsupported(format!(
                "{name}: detached NRRD data (`data file: {}`); save the volume with attached data (.nrrd)",
                trunc(value)
            )))
        }
        "block size" | "blocksize" => return Err(Error::Unsupported(format!("{name}: NRRD `block` data"))),
        // Descriptive fields that do not change how voxels are read.
        _ => {}
    }
    Ok(())
}

fn parse_type(value: &str, name: &str) -> Result<DType> {
    let v = value.trim();
    Ok(match v {
        "signed char" | "int8" | "int8_t" => DType::I8,
        "uchar" | "unsigned char" | "uint8" | "uint8_t" => DType::U8,
        "short" | "short int" | "signed short" | "signed short int" | "int16" | "int16_t" => DType::I16,
        "ushort" | "unsigned short" | "unsigned short int" | "uint16" | "uint16_t" => DType::U16,
        "int" | "signed int" | "int32" | "int32_t" => DType::I32,
        "uint" | "unsigned int" | "uint32" | "uint32_t" => DType::U32,
        "longlong"
        | "long long"
        | "long long int"
        | "signed long long"
        | "signed long long int"
        | "int64"
        | "int64_t" => DType::I64,
        "ulonglong" | "unsigned long long" | "unsigned long long int" | "uint64" | "uint64_t" => DType::U64,
        "float" => DType::F32,
        "double" => DType::F64,
        "block" => return Err(Error::Unsupported(format!("{name}: NRRD type `block`"))),
        other => return Err(Error::format(name, format!("unknown NRRD type {:?}", trunc(other)))),
    })
}

/// Splits `(a,b,c) none (d,e,f)` into `["(a,b,c)", "none", "(d,e,f)"]`.
fn split_vectors(value: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = value.trim();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("none") {
            out.push("none".to_string());
            rest = r.trim_start();
        } else if rest.starts_with('(') {
            let close = rest.find(')')?;
            out.push(rest[..=close].to_string());
            rest = rest[close + 1..].trim_start();
        } else {
            return None;
        }
    }
    Some(out)
}

/// `(a, b, c)` → `[a, b, c]` (finite numbers only).
fn parse_vector(tok: &str) -> Option<[f64; 3]> {
    let inner = tok.strip_prefix('(')?.strip_suffix(')')?;
    let v: Vec<f64> = inner.split(',').map(|s| s.trim().parse::<f64>().ok()).collect::<Option<_>>()?;
    (v.len() == 3 && v.iter().all(|x| x.is_finite())).then(|| [v[0], v[1], v[2]])
}

/// The RAS+ affine and the name of the source space.
fn affine_of(hdr: &Header, name: &str) -> Result<(Affine, String)> {
    let (dirs, origin, sign, space) = match &hdr.space {
        Some(space) => {
            let sign = match space.as_str() {
                "right-anterior-superior" | "RAS" => [1.0, 1.0, 1.0],
                "left-anterior-superior" | "LAS" => [-1.0, 1.0, 1.0],
                "left-posterior-superior" | "LPS" => [-1.0, -1.0, 1.0],
                other => {
                    return Err(Error::Unsupported(format!(
                        "{name}: NRRD space `{other}` (a patient space is needed: RAS, LAS or LPS)"
                    )))
                }
            };
            let dirs = hdr.directions.clone().ok_or_else(|| missing(name, "space directions"))?;
            if dirs.len() != 3 {
                return Err(Error::format(
                    name,
                    format!("`space directions` has {} vectors, expected 3", dirs.len()),
                ));
            }
            (dirs, hdr.origin.unwrap_or([0.0; 3]), sign, space.clone())
        }
        None => {
            if hdr.directions.is_some() || hdr.origin.is_some() {
                return Err(Error::format(name, "`space directions`/`space origin` given without `space`"));
            }
            let s = hdr.spacings.clone().ok_or_else(|| {
                Error::format(name, "no geometry: neither `space` + `space directions` nor `spacings`")
            })?;
            if s.len() != 3 || s.iter().any(|v| !(v.is_finite() && *v > 0.0)) {
                return Err(Error::format(
                    name,
                    format!("`spacings` must be 3 finite values > 0 mm, found {:?}", s),
                ));
            }
            let dirs = vec![[s[0], 0.0, 0.0], [0.0, s[1], 0.0], [0.0, 0.0, s[2]]];
            (dirs, [0.0; 3], [-1.0, -1.0, 1.0], "spacings only, read as LPS".to_string())
        }
    };
    let mut a = [[0.0; 4]; 4];
    for p in 0..3 {
        for axis in 0..3 {
            a[p][axis] = sign[p] * dirs[axis][p] + 0.0; // + 0.0: no negative zeros
        }
        a[p][3] = sign[p] * origin[p] + 0.0;
    }
    a[3] = [0.0, 0.0, 0.0, 1.0];
    check_affine(&a).map_err(|r| Error::format(name, r))?;
    Ok((a, space))
}
