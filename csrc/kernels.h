// Shared helpers for the worldenv native kernels (splat.cpp, fuse.cpp).
//
// The kernels receive NumPy views of torch CPU tensors (zero copy: the
// bindings declare every array `noconvert`, so a wrong dtype or a
// non-contiguous array is refused instead of silently copied, and outputs are
// written in place). Shapes are checked here and inconsistencies raise
// std::invalid_argument, which pybind11 turns into a Python ValueError.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace worldenv {

namespace py = pybind11;

// C-contiguous array of T; the bindings add .noconvert() so no copy is made.
template <class T>
using Array = py::array_t<T, py::array::c_style>;

// Wildcard in an expected shape.
constexpr int64_t kAny = -1;

inline std::string shape_str(const int64_t* shape, size_t ndim) {
  std::ostringstream s;
  s << "(";
  for (size_t i = 0; i < ndim; ++i) {
    if (i) s << ", ";
    if (shape[i] == kAny) {
      s << "*";
    } else {
      s << shape[i];
    }
  }
  if (ndim == 1) s << ",";
  s << ")";
  return s.str();
}

// Throws std::invalid_argument unless `a` has exactly `expected` (kAny = any).
template <class T>
void expect_shape(const char* kernel, const char* name, const Array<T>& a,
                  std::initializer_list<int64_t> expected) {
  bool ok = static_cast<size_t>(a.ndim()) == expected.size();
  size_t i = 0;
  for (int64_t e : expected) {
    if (!ok) break;
    if (e != kAny && a.shape(static_cast<py::ssize_t>(i)) != e) ok = false;
    ++i;
  }
  if (!ok) {
    std::vector<int64_t> want(expected);
    std::vector<int64_t> got(static_cast<size_t>(a.ndim()));
    for (size_t k = 0; k < got.size(); ++k) got[k] = a.shape(static_cast<py::ssize_t>(k));
    throw std::invalid_argument(std::string(kernel) + ": Expect `" + name + "` to have shape " +
                                shape_str(want.data(), want.size()) +
                                ", actually: " + shape_str(got.data(), got.size()));
  }
}

inline uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}

inline float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

// A value that is finite: not NaN and not +-inf. Written with comparisons so
// that it behaves the same without relying on <cmath> classification under
// any optimisation flag.
inline bool finite(float x) { return x - x == 0.0f; }

void bind_splat(py::module_& m);
void bind_fuse(py::module_& m);

}  // namespace worldenv
