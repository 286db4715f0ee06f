terraform {
  # 1.9: variables.tf's validation of the two auth caches together reads two variables; 1.6:
  # backend.tf.example's s3 `endpoints`; 1.2: replace_triggered_by.
  required_version = ">= 1.9.0"

  required_providers {
    # tests/test_terraform_schema.py checks every block against the schema of provider v1.97.1
    # (provider-schema/huaweicloud-1.97.1.json): "~>" allows its patch releases (1.97.x, x >= 1)
    # and nothing newer, whose arguments and rules that check has not seen.
    huaweicloud = {
      source  = "huaweicloud/huaweicloud"
      version = "~> 1.97.1"
    }
    # The generated secrets (secrets.tf).
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
