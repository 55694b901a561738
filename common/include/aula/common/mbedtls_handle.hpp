// RAII owners for mbedTLS contexts, shared by the code that talks to mbedTLS
// directly (crypto, the HTTPS server, the TLS test server). Including this
// header brings in mbedTLS's headers: policy code never includes it.
#pragma once

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/ssl_ticket.h>
#include <mbedtls/x509_crt.h>

namespace aula::tls {

// One owner per context type: init in the constructor, free in the
// destructor, never copied or moved (the contexts hold pointers into
// themselves).
template <typename T, void (*Init)(T*), void (*Free)(T*)>
class Handle {
 public:
  Handle() { Init(&value_); }
  ~Handle() { Free(&value_); }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;

  T* get() { return &value_; }
  const T* get() const { return &value_; }

 private:
  T value_{};
};

using EntropyContext = Handle<mbedtls_entropy_context, mbedtls_entropy_init, mbedtls_entropy_free>;
using CtrDrbgContext =
    Handle<mbedtls_ctr_drbg_context, mbedtls_ctr_drbg_init, mbedtls_ctr_drbg_free>;
using PkContext = Handle<mbedtls_pk_context, mbedtls_pk_init, mbedtls_pk_free>;
using X509Crt = Handle<mbedtls_x509_crt, mbedtls_x509_crt_init, mbedtls_x509_crt_free>;
using SslConfig = Handle<mbedtls_ssl_config, mbedtls_ssl_config_init, mbedtls_ssl_config_free>;
using SslContext = Handle<mbedtls_ssl_context, mbedtls_ssl_init, mbedtls_ssl_free>;
using TicketContext =
    Handle<mbedtls_ssl_ticket_context, mbedtls_ssl_ticket_init, mbedtls_ssl_ticket_free>;

}  // namespace aula::tls
