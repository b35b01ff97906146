// Python bindings for worldenv._native.
//
// The kernels live beside their own bindings (splat.cpp, fuse.cpp); this file
// only assembles the module and the thread controls.
#include <pybind11/pybind11.h>

#include <omp.h>

#include <stdexcept>

#include "kernels.h"

namespace py = pybind11;

PYBIND11_MODULE(_native, m) {
  m.doc() = "worldenv native CPU kernels (C++17, OpenMP)";
  m.def("max_threads", []() { return omp_get_max_threads(); },
        "Number of OpenMP threads the kernels use by default.");
  m.def(
      "set_num_threads",
      [](int n) {
        if (n < 1) throw std::invalid_argument("Expect `n` to be positive, actually: " + std::to_string(n));
        omp_set_num_threads(n);
      },
      py::arg("n"),
      "Set the number of OpenMP threads for later parallel regions started from this thread. "
      "Results do not depend on it; only speed does. When torch was imported first, the "
      "extension shares torch's OpenMP runtime, so this is torch.set_num_threads as well.");
  worldenv::bind_splat(m);
  worldenv::bind_fuse(m);
}
