terraform {
  # 1.5: check blocks; terraform_data (1.4) drives the server's replacement.
  required_version = ">= 1.5.0"

  required_providers {
    # The provider release whose schema this module was checked against (v1.97.1), and its patches.
    huaweicloud = {
      source  = "huaweicloud/huaweicloud"
      version = "~> 1.97.1"
    }
    random = {
      source  = "hashicorp/random"
      version = "~> 3.6"
    }
  }
}

# Credentials come from the environment (HW_ACCESS_KEY, HW_SECRET_KEY), never from this code.
provider "huaweicloud" {
  region = var.region
}
