//! What the control plane and the host agent both need and neither owns: the one
//! duration parser of their flags (`duration`) and reading names out of x509
//! certificates (`x509`).

pub mod duration;
pub mod x509;
